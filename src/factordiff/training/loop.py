"""The training loop (``factordiff train``), read top to bottom.

One process or many (``accelerate launch`` / ``torchrun``: DDP, gloo on CPU, NCCL on
GPUs), fp32 or bf16/fp16 autocast, gradient accumulation. Every random draw of a step --
which images (``batches``), the family's own draws (``training_inputs``: EncDiff's noise and
timesteps), dropout masks -- is a function of ``(seed, step, chunk)``, so a run resumed
from a checkpoint continues bitwise as if never stopped, and N processes compute what one
process computes with N-fold accumulation.

The loop knows no family: the model says what a micro-batch's loss takes
(``training_inputs``), computes it (``forward``) and names the parameters of each optimiser
(``optimizer_groups``). Phases: (1) the first-stage autoencoder (``first_stage``), where
the model has one and it is not trained yet; (2) the model's own loss, the first stage
frozen: each step sets the learning rate, runs the micro-batches, clips, steps the
optimisers and the EMA, then logs, refits DyGA's anchors when due, checkpoints and
evaluates.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from contextlib import ExitStack, nullcontext
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from tqdm.auto import tqdm

from factordiff.checkpoint import latest_checkpoint
from factordiff.config import Config, flat_settings
from factordiff.data import load_dataset
from factordiff.data.base import FactorDataset
from factordiff.errors import ConfigError
from factordiff.pipeline import ImageModel, build_model, resolve_image_size
from factordiff.training import dyga
from factordiff.training.batches import (
    batch_stream,
    cache_latents,
    caching_pays,
    chunk_seed,
    device_batch_stream,
)
from factordiff.training.first_stage import train_first_stage
from factordiff.training.optim import CompiledWithFallback
from factordiff.training.periodic_eval import periodic_eval
from factordiff.training.precision import training_precision
from factordiff.training.run_dir import claim_run_dir, first_stage_checkpoint_dir, prepare_run_dir
from factordiff.training.run_guard import StopRequest, TrainingStoppedError, stop_requested
from factordiff.training.run_log import RunLogger
from factordiff.training.state import TrainState
from factordiff.training.threads import ThreadGovernor


def train(cfg: Config, run_dir: str | Path, *, progress: bool = True) -> Path:
    """Train (or resume) the run in ``run_dir``; returns its newest checkpoint."""
    run_dir = Path(run_dir)
    t = cfg.train
    # accelerate treats several processes without a GPU as DDP only when told cpu=True.
    multi_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    # accelerate keeps one global state per process; a second train() call in the same
    # process (library use, tests) may ask for another precision. The process group stays.
    AcceleratorState._reset_state()
    precision, note = training_precision(t.mixed_precision, torch.cuda.is_available())
    acc = Accelerator(mixed_precision=precision, cpu=multi_cpu)
    if note and acc.is_main_process:
        print(note)
    n_chunks = acc.num_processes * t.grad_accum
    if t.batch_size % n_chunks:
        raise ConfigError(
            f"train.batch_size {t.batch_size} must divide by processes x grad_accum = {n_chunks}"
        )
    cfg = prepare_run_dir(cfg, run_dir)
    dataset = load_dataset(cfg.data)
    cfg.data.image_size = resolve_image_size(cfg)
    torch.manual_seed(t.seed)  # same initial weights on every process
    model = build_model(cfg).to(acc.device)
    with ExitStack() as guards:
        stop = guards.enter_context(StopRequest())
        claim_run_dir(cfg, run_dir, model, acc, guards)
        return _train_claimed(cfg, run_dir, acc, model, dataset, stop, progress)


def _train_claimed(
    cfg: Config,
    run_dir: Path,
    acc: Accelerator,
    model: ImageModel,
    dataset: FactorDataset,
    stop: StopRequest,
    progress: bool,
) -> Path:
    """The training proper, with the run directory locked and signals caught."""
    t = cfg.train
    world, rank = acc.num_processes, acc.process_index
    progress = progress and acc.is_main_process
    run = TrainState.fresh(cfg, model, len(dataset))
    ckpt = latest_checkpoint(run_dir)
    if ckpt is not None:
        run.resume(ckpt, cfg, acc)
    logger = RunLogger(run_dir, run.step, enabled=acc.is_main_process, log_with=t.log_with,
                       config=flat_settings(cfg))  # fmt: skip
    threads = ThreadGovernor(t.threads)  # fast alone, fair when another process shares cores
    before = run.resumed_precision  # the checkpoint's precision, when resuming one
    switched = {} if before in (None, acc.mixed_precision) else {"mixed_precision_before": before}
    if switched and acc.is_main_process:  # a bf16 run begun without bf16, or the reverse
        print(f"note: the checkpoint was trained with mixed_precision={before}, this machine "
              f"trains the rest with {acc.mixed_precision}: the run mixes the two (logged as "
              "mixed_precision_before / mixed_precision_used)")  # fmt: skip
    if acc.mixed_precision != t.mixed_precision or switched:  # emulated here, or not as before
        logger.log(run.step, {"mixed_precision_used": acc.mixed_precision, **switched})

    # Phase 1, then the step-0 checkpoint: the trained first stage is never trained twice.
    if ckpt is None and train_first_stage(
        model, run.data, dataset, cfg, logger, progress, stop, acc, run_dir, run.clock, threads
    ):
        run.save(run_dir, cfg, acc)
    if acc.is_main_process:  # the step-0 checkpoint holds it now (or there was none to train)
        shutil.rmtree(first_stage_checkpoint_dir(run_dir), ignore_errors=True)
    latents = _cached_latents(model, dataset, cfg, acc, run.step, progress)

    # Phase 2.
    if t.channels_last:
        model.to(memory_format=torch.channels_last)
    ddp_model, *optimizers = acc.prepare(model, *run.optimizers.values())
    forward = CompiledWithFallback(ddp_model) if t.compile else ddp_model
    stream = device_batch_stream if cfg.data.on_device else batch_stream
    extra = (acc.device,) if cfg.data.on_device else ()
    batches = iter(stream(dataset, run.data, cfg, run.step, rank, world, *extra))
    bar = tqdm(total=t.max_steps, initial=run.step, desc="train", disable=not progress)
    say = bar.write if progress else (lambda _: None)
    shown: dict[str, str] = {}  # the progress bar's postfix
    loss_sum, loss_count = torch.zeros((), device=acc.device), 0
    term_sums: dict[str, torch.Tensor] = {}  # the loss's terms, where the family has several
    tick, images, bad_streak = time.perf_counter(), 0, 0
    try:
        if run.refit_pending and run.step < t.max_steps:
            tick += dyga.refit(model, dataset, cfg, run.step, run_dir, acc, logger)
        while run.step < t.max_steps:
            # -- one step: micro-batches, all-reduced gradients, clip, update, EMA
            step_start = time.perf_counter()
            ddp_model.train()
            step_loss = torch.zeros((), device=acc.device)
            # BatchNorm statistics move in the forward pass; a skipped step must not keep them
            bn_stats = [b.detach().clone() for b in model.buffers()]
            for micro in range(t.grad_accum):
                seed = chunk_seed(t.seed, run.step, micro * world + rank)
                g = torch.Generator().manual_seed(seed)
                batch = next(batches)
                x = model.prepare_images(batch["image"])
                z0 = None if latents is None else latents[batch["index"].to(acc.device)]
                inputs = model.training_inputs(x, z0, g)
                torch.manual_seed(seed)  # dropout / skip-dropout masks, a VAE's sampling
                sync = micro == t.grad_accum - 1
                with nullcontext() if sync else acc.no_sync(ddp_model):
                    loss = forward(*inputs) / t.grad_accum
                    acc.backward(loss)
                step_loss += loss.detach()
            step_terms = model.pop_loss_terms()
            # The gradients are all-reduced, so every process reaches the same verdict; a
            # non-finite loss anywhere makes them non-finite too.
            clip = t.grad_clip if t.grad_clip > 0 else math.inf
            if torch.isfinite(acc.clip_grad_norm_(run.params, clip)):
                for optimizer, scheduler in zip(optimizers, run.schedulers.values(), strict=True):
                    optimizer.step()
                    scheduler.step()
                run.ema.step(model.ema_module.parameters())
                loss_sum += step_loss
                loss_count += 1
                for name, value in step_terms.items():
                    term_sums[name] = term_sums.get(name, 0) + value
                bad_streak = 0
            else:  # skip the update; the data moves on, so the run stays deterministic
                if acc.mixed_precision == "fp16":
                    for optimizer in optimizers:  # the loss scaler skips them, lowers its scale
                        optimizer.step()
                for buffer, saved in zip(model.buffers(), bn_stats, strict=True):
                    buffer.copy_(saved)
                run.bad_steps += 1
                bad_streak += 1
                logger.log(run.step + 1, {"skipped_nonfinite_step": run.bad_steps})
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            run.step += 1
            step = run.step
            images += t.batch_size
            note = threads.observe(time.perf_counter() - step_start)
            if note:
                say(f"step {step}: {note}")
                logger.log(step, {"threads": threads.threads, "threads_note": note})
            # images/s every step (the loss only at log steps: reading it syncs a GPU)
            shown["img_s"] = f"{images / max(time.perf_counter() - tick, 1e-9):.0f}"
            bar.set_postfix(shown, refresh=False)
            bar.update(1)
            if bad_streak >= t.max_bad_steps:
                raise _too_many_bad_steps(bad_streak, step, run_dir)

            # -- after the step: DyGA refit, log, checkpoint, stop, evaluate
            if dyga.refit_due(cfg, step, run.data.per_epoch):
                tick += dyga.refit(model, dataset, cfg, step, run_dir, acc, logger)
            if (step % t.log_every == 0 or step == t.max_steps) and loss_count:
                mean_loss = acc.reduce(loss_sum, "mean").item() / loss_count
                terms = {k: acc.reduce(v, "mean").item() / loss_count for k, v in term_sums.items()}
                pull = model.anchors.pop_stats() if model.anchors is not None else None
                logger.log(step, {"loss": mean_loss, **terms, "lr": run.lr(),
                                  "images_per_s": images / (time.perf_counter() - tick),
                                  "threads": threads.threads,
                                  "train_s": run.clock.seconds(), **(pull or {})})  # fmt: skip
                shown["loss"] = f"{mean_loss:.4f}"
                loss_sum.zero_()
                term_sums.clear()
                loss_count, images, tick = 0, 0, time.perf_counter()
            stopping = stop_requested(stop, acc) and step < t.max_steps
            due = step % t.checkpoint_every == 0 or step == t.max_steps or stopping
            if due and not bad_streak:
                run.save(run_dir, cfg, acc)  # never in a non-finite streak: keep the last good
            if stopping:  # before any evaluation: a pre-empted job has seconds, not minutes
                raise stop.stopped(
                    f"at step {step}; the newest good checkpoint is "
                    f"{latest_checkpoint(run_dir)}. Resume with the same command "
                    f"(factordiff train ... --out {run_dir})."
                )
            if t.eval_every and (step % t.eval_every == 0 or step == t.max_steps):
                trained_s = run.clock.seconds()  # the scores are of the weights at this time
                with run.clock.paused():
                    if acc.is_main_process:
                        say(f"step {step}: evaluating (protocol x {t.eval_scale}, EMA U-Net) ...")
                        scores = periodic_eval(model, run.ema, dataset, cfg, run_dir, step)
                        say(f"step {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
                        logger.log_eval(step, scores, trained_s)
                    acc.wait_for_everyone()
                tick = time.perf_counter()
    finally:
        bar.close()
        logger.close()
        threads.restore()
    if bad_streak:
        raise TrainingStoppedError(
            f"the run reached train.max_steps={t.max_steps} in a streak of {bad_streak} "
            f"non-finite steps, so its final weights were not saved; the newest good "
            f"checkpoint is {latest_checkpoint(run_dir)}."
        )
    return latest_checkpoint(run_dir)


def _cached_latents(
    model: ImageModel, dataset: FactorDataset, cfg: Config, acc: Accelerator, step: int,
    progress: bool,
) -> torch.Tensor | None:  # fmt: skip
    """``train.cache_latents``: every image's latent once, when that costs less than
    encoding the batches the run has left; else None (the forward encodes)."""
    t = cfg.train
    to_see = (t.max_steps - step) * t.batch_size  # the global batch, over all processes
    if not t.cache_latents or step >= t.max_steps:
        return None
    if caching_pays(len(dataset), to_see):
        return cache_latents(model, dataset, cfg, acc, progress)
    if acc.is_main_process:
        print(
            f"train.cache_latents: not caching -- the run has {to_see:,} images left to see "
            f"of {len(dataset):,}, so encoding every image once would cost more than "
            "encoding each batch"
        )
    return None


def _too_many_bad_steps(streak: int, step: int, run_dir: Path) -> TrainingStoppedError:
    newest = latest_checkpoint(run_dir)
    return TrainingStoppedError(
        f"{streak} steps in a row had a non-finite loss or gradient (up to step {step}); "
        f"stopped. The last good checkpoint is "
        f"{newest if newest else 'none (no checkpoint was written yet)'}. Lower "
        "train.base_lr, set train.grad_clip, or train in fp32, then rerun to resume."
    )

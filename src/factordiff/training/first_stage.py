"""Phase 1 of training: the first-stage autoencoder by its reconstruction loss."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from factordiff.checkpoint import (
    latest_checkpoint,
    load_into,
    load_state,
    load_tensors,
    optimizer_state_tensors,
    remove_partial_checkpoints,
    restore_optimizer,
    save_checkpoint,
)
from factordiff.config import Config
from factordiff.pipeline import ImageModel
from factordiff.training.batches import StepBatches, chunk_seed
from factordiff.training.run_dir import first_stage_checkpoint_dir
from factordiff.training.run_guard import StopRequest, stop_requested
from factordiff.training.run_log import RunLogger, TrainClock
from factordiff.training.threads import ThreadGovernor


def train_first_stage(
    model: ImageModel,
    data: StepBatches,
    dataset,
    cfg: Config,
    logger: RunLogger,
    progress: bool,
    stop: StopRequest,
    acc: Accelerator,
    run_dir: Path,
    clock: TrainClock,
    threads: ThreadGovernor | None = None,
) -> bool:
    """Phase 1: the autoencoder by its reconstruction loss (pixels: their scale only); False
    when there is nothing to do.

    Every ``train.checkpoint_every`` steps and on a stop request, the phase's state (the
    first stage's weights, Adam's state, the step reached) is saved under
    ``RUN/first_stage/checkpoints/``; a restarted run continues from there bitwise, as
    every step reseeds the global RNG and its batch is a function of the step.
    The scale of its latents is calibrated right after, so a checkpoint written at step 0
    holds a first stage that is finished in every respect.
    """
    fs = model.first_stage
    if fs is None or bool(fs.calibrated):
        return False
    if fs.model is None:  # pixels (first_stage.scale_pixels): only the scale to measure
        fs.calibrate_scale(model.prepare_images(dataset.images_at(data.rows(0, 0, 1))))
        return True
    fs.requires_grad_(True).train()
    lr = cfg.model.first_stage.lr * (cfg.train.batch_size if cfg.train.scale_lr else 1)
    opt = torch.optim.Adam(fs.parameters(), lr=lr, betas=(0.5, 0.9))
    steps = cfg.model.first_stage.train_steps
    own_dir = first_stage_checkpoint_dir(run_dir)
    start = 0
    if acc.is_main_process:  # rank 0 holds the run's lock: no writer is alive
        for partial in remove_partial_checkpoints(own_dir):
            print(f"removed {partial.name}, a checkpoint a killed process left half-written")
    acc.wait_for_everyone()
    ckpt = latest_checkpoint(own_dir)
    if ckpt is not None:
        state = load_state(ckpt)
        load_into(fs, load_tensors(ckpt, "first_stage"), str(ckpt / "first_stage.safetensors"))
        restore_optimizer(opt, load_tensors(ckpt, "optimizer"), state["optimizer"])
        start = state["first_stage_step"]
        clock.restart_at(state.get("train_s", 0.0))
        if acc.is_main_process:
            print(f"resuming the first-stage phase of {run_dir} at step {start} of {steps}")
    logger.keep_first_stage_until(start)  # records past it are logged again below

    def save(done: int) -> Path:
        acc.wait_for_everyone()
        if acc.is_main_process:
            opt_tensors, opt_meta = optimizer_state_tensors(opt)
            save_checkpoint(
                own_dir, done,
                {"first_stage": fs.state_dict(), "optimizer": opt_tensors},
                {"step": done, "phase": "first_stage", "first_stage_step": done,
                 "train_steps": steps, "seed": cfg.train.seed, "train_s": clock.seconds(),
                 "rng": "reseeded every step by (seed, step); see train_first_stage",
                 "optimizer": opt_meta},
                keep=1,
            )  # fmt: skip
        acc.wait_for_everyone()
        return latest_checkpoint(own_dir)

    bar = tqdm(range(start, steps), desc="first stage", disable=not progress,
               initial=start, total=steps)  # fmt: skip
    for step in bar:
        step_start = time.perf_counter()
        torch.manual_seed(chunk_seed(cfg.train.seed, step, 10_000))
        x = model.prepare_images(dataset.images_at(data.rows(step, 0, 1)))
        with acc.autocast():
            loss, parts = fs.reconstruction_loss(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done = step + 1
        note = threads.observe(time.perf_counter() - step_start) if threads else None
        if note:
            if progress:
                bar.write(f"first stage, step {done}: {note}")
            logger.log(0, {"threads": threads.threads, "threads_note": note})
        bar.set_postfix(rec_l1=f"{parts['rec_l1']:.4f}", refresh=False)
        if done % cfg.train.log_every == 0 or done == steps:
            logger.log(0, {"first_stage_step": done, **parts, "train_s": clock.seconds()})
        if stop_requested(stop, acc):
            bar.close()
            saved = save(done)
            raise stop.stopped(
                f"in the first-stage phase at step {done} of {steps}; its checkpoint is "
                f"{saved}. Resume with the same command (factordiff train ... --out "
                f"{run_dir}): the phase resumes at step {done}."
            )
        if done % cfg.train.checkpoint_every == 0 and done < steps:
            save(done)  # at the last step the step-0 checkpoint follows at once
    fs.requires_grad_(False).eval()
    fs.calibrate_scale(model.prepare_images(dataset.images_at(data.rows(0, 0, 1))))
    return True

"""The training loop (``factordiff train``), readable top to bottom.

One process or many (``accelerate launch`` / ``torchrun``: DDP, gloo on CPU, NCCL on
GPUs), fp32 or bf16/fp16 autocast, gradient accumulation. Every random draw of a step --
which images, which timesteps, which noise, dropout masks -- is a function of
``(seed, step, chunk)``, where the global batch of a step is cut into
``processes x grad_accum`` chunks and chunk ``micro * processes + rank`` is this process's.
So a run resumed from a checkpoint continues bitwise as if never stopped, and N processes
compute what one process computes with N-fold accumulation.

Phases: (1) the first-stage autoencoder, unless ``first_stage.kind=none`` or it is already
trained; (2) the encoder + U-Net by the diffusion loss, the first stage frozen.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import broadcast_object_list
from diffusers.training_utils import EMAModel
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from factordiff.checkpoint import (
    latest_checkpoint,
    load_into,
    load_state,
    load_tensors,
    remove_partial_checkpoints,
    save_checkpoint,
)
from factordiff.config import Config, TrainConfig, load_config, save_config
from factordiff.data.base import FactorDataset
from factordiff.data.loader import TorchFactorDataset, to_float
from factordiff.diffusion import sample_timesteps
from factordiff.errors import ConfigError
from factordiff.families import build_model, load_dataset
from factordiff.models.anchoring import fit_anchors
from factordiff.pipeline import ImageModel, resolve_image_size
from factordiff.run_guard import (
    RunDirError,
    RunLock,
    StopRequest,
    TrainingStoppedError,
    check_run_dir,
    ignore_stop_signals,
)

#: Keys that may change when a run is resumed: how long, how often, how it is logged, and
#: how the same global batch is computed (accumulation, memory layout, compilation).
RESUMABLE_CHANGES = (
    "train.max_steps", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
    "train.eval_every", "train.eval_scale", "train.max_bad_steps", "train.grad_accum",
    "train.channels_last", "train.compile", "data.num_workers", "data.on_device", "data.root",
    "data.cache_dir",
)  # fmt: skip


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def prepare_run_dir(cfg: Config, run_dir: Path) -> Config:
    """The config this run trains with. A run directory that already has a config keeps
    it: only the keys in ``RESUMABLE_CHANGES`` may differ (e.g. a larger max_steps)."""
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        return cfg
    saved = load_config(saved_path)
    if saved.data.image_size is not None and cfg.data.image_size is None:
        cfg.data.image_size = saved.data.image_size
    old, new = _flat(saved.to_dict()), _flat(cfg.to_dict())
    changed = [k for k in new if old.get(k) != new[k] and k not in RESUMABLE_CHANGES]
    if changed:
        diffs = ", ".join(f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in changed[:4])
        raise ConfigError(
            f"{run_dir} holds a run with another config ({diffs}). Resume it with the same "
            f"config (only {', '.join(RESUMABLE_CHANGES)} may change) or use a new --out."
        )
    return cfg


def chunk_seed(seed: int, step: int, chunk: int) -> int:
    return (seed * 1_000_003 + step) * 1_009 + chunk


class StepBatches:
    """Which dataset rows a (step, chunk) trains on: seeded epoch permutations, drop-last."""

    def __init__(self, n_items: int, batch_size: int, seed: int) -> None:
        if n_items < batch_size:
            raise ConfigError(
                f"train.batch_size {batch_size} exceeds the dataset's {n_items} images"
            )
        self.n, self.batch, self.seed = n_items, batch_size, seed
        self.per_epoch = n_items // batch_size
        self._epoch, self._perm = -1, np.empty(0, dtype=np.int64)

    def position(self, step: int) -> dict:
        return {"epoch": step // self.per_epoch, "batch_in_epoch": step % self.per_epoch}

    def rows(self, step: int, chunk: int, n_chunks: int) -> np.ndarray:
        epoch, k = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g).numpy()
        batch = self._perm[k * self.batch : (k + 1) * self.batch]
        size = self.batch // n_chunks
        return np.sort(batch[chunk * size : (chunk + 1) * size])


class RankBatchSampler(torch.utils.data.Sampler):
    """This process's rows for every (step, micro-batch) from ``start`` on, in training
    order, so a DataLoader with workers can prefetch them while the model computes."""

    def __init__(self, data: StepBatches, start: int, stop: int, rank: int, world: int, accum: int):
        self.data, self.start, self.stop = data, start, stop
        self.rank, self.world, self.accum = rank, world, accum

    def __len__(self) -> int:
        return (self.stop - self.start) * self.accum

    def __iter__(self):
        n_chunks = self.world * self.accum
        for step in range(self.start, self.stop):
            for micro in range(self.accum):
                yield self.data.rows(step, micro * self.world + self.rank, n_chunks).tolist()


def _as_fetched(batch: dict) -> dict:
    return batch  # TorchFactorDataset fetches a whole batch in one call


def batch_stream(
    dataset: FactorDataset, data: StepBatches, cfg: Config, start: int, rank: int, world: int
) -> DataLoader:
    """Float batches in [-1, 1] at the model's size; ``data.num_workers`` > 0 prefetches."""
    workers = cfg.data.num_workers
    return DataLoader(
        TorchFactorDataset(dataset, image_size=cfg.data.image_size),
        batch_sampler=RankBatchSampler(
            data, start, cfg.train.max_steps, rank, world, cfg.train.grad_accum
        ),
        num_workers=workers,
        collate_fn=_as_fetched,
        pin_memory=torch.cuda.is_available(),
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
        worker_init_fn=ignore_stop_signals if workers else None,
    )


def device_batch_stream(
    dataset: FactorDataset,
    data: StepBatches,
    cfg: Config,
    start: int,
    rank: int,
    world: int,
    device: torch.device,
) -> Iterator[dict]:
    """``data.on_device``: the whole dataset as uint8 on the training device, each chunk
    gathered and scaled there. Same batches as ``batch_stream``, without a loader or a
    host-to-device copy per step; for datasets that fit (Shapes3D: 5.9 GB)."""
    n = len(dataset)
    shape = dataset.images_at(np.arange(1)).shape[1:]
    need = n * int(np.prod(shape))
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if need > free // 2:
            raise ConfigError(
                f"data.on_device: the {n} images need {need / 2**30:.1f} GiB, more than half "
                f"of the {free / 2**30:.1f} GiB free on {device}; set data.on_device=false"
            )
    store = torch.empty((n, *shape), dtype=torch.uint8, device=device)
    for lo in tqdm(range(0, n, 4096), desc=f"images to {device}", leave=False, disable=n < 50_000):
        rows = np.arange(lo, min(n, lo + 4096))
        store[lo : lo + len(rows)] = torch.from_numpy(dataset.images_at(rows)).to(device)
    sampler = RankBatchSampler(data, start, cfg.train.max_steps, rank, world, cfg.train.grad_accum)
    for rows in sampler:
        index = torch.as_tensor(rows, device=device)
        yield {"image": to_float(store[index], cfg.data.image_size), "index": index}


@torch.no_grad()
def cache_latents(
    model: ImageModel, dataset: FactorDataset, cfg: Config, acc: Accelerator, progress: bool
) -> torch.Tensor:
    """``train.cache_latents``: every image's first-stage latent, computed once.

    The first stage is frozen in phase 2, so encoding each batch again (a fifth of a
    quick-start step on the CPU) recomputes the same latents; they are kept on the training
    device (Shapes3D's 480,000 at 16x16x3: 1.5 GB in fp32).
    """
    n = len(dataset)
    latents = torch.empty((n, *model.latent_shape), device=acc.device)
    model.first_stage.eval()
    for lo in tqdm(range(0, n, 256), desc="caching latents", disable=not progress, leave=False):
        rows = np.arange(lo, min(n, lo + 256))
        x = model.prepare_images(to_float(dataset.images_at(rows), cfg.data.image_size))
        with acc.autocast():  # as the per-step encode inside the training forward
            latents[lo : lo + len(rows)] = model.first_stage.encode(x).float()
    return latents


def caching_pays(n_images: int, images_to_see: int) -> bool:
    """Caching encodes all ``n_images`` once; encoding per batch encodes ``images_to_see``.
    On a dataset larger than the run's remaining images (Shapes3D's 480,000 against a
    CPU recipe's 224,000) the cache would cost more than it saves."""
    return images_to_see >= n_images


def lr_multiplier(step: int, t: TrainConfig) -> float:
    """Linear warm-up to the base rate, then constant (published) or a cosine to 0 at
    ``max_steps`` (a fixed short budget ends on small steps instead of mid-stride)."""
    warmup = max(1, t.warmup_steps)
    if step < warmup or t.lr_schedule == "constant":
        return min(1.0, (step + 1) / warmup)
    progress = min(1.0, (step - warmup) / max(1, t.max_steps - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class TrainClock:
    """Wall seconds spent training, both phases, periodic evaluation excluded: the time
    axis of time-to-quality curves. Kept in checkpoints, so it adds up across resumes."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.restart_at(seconds)

    def restart_at(self, seconds: float) -> None:
        self._base, self._start = seconds, time.perf_counter()

    def seconds(self) -> float:
        return self._base + time.perf_counter() - self._start

    @contextmanager
    def paused(self):
        held = self.seconds()
        try:
            yield
        finally:
            self.restart_at(held)


def refit_scheduled(cfg: Config, step: int, per_epoch: int) -> bool:
    """DyGA schedule: no anchors during the first epoch, then a refit every N epochs
    (or every ``anchoring.every_steps`` steps)."""
    a = cfg.anchoring
    if not a.enabled:
        return False
    if a.every_steps > 0:
        return step % a.every_steps == 0
    return step >= per_epoch and step % (per_epoch * a.every_epochs) == 0


def refit_due(cfg: Config, step: int, per_epoch: int) -> bool:
    """``refit_scheduled``, except at the last step: anchors fitted there would only be
    used by evaluation, never by the U-Net in training. A run resumed past that step does
    the skipped refit first (``refit_pending``), so it continues as an unbroken run."""
    return step < cfg.train.max_steps and refit_scheduled(cfg, step, per_epoch)


def refit_log(units: list, seconds: float) -> dict:
    """What a refit did, per unit: Gaussians kept (K), split and filtered out."""
    return {"anchor_fit_s": seconds, "anchors": [u.n_components for u in units],
            "anchor_splits": [u.splits for u in units],
            "anchor_filtered": [u.filtered for u in units]}  # fmt: skip


def refit_anchors(
    model: ImageModel, dataset: FactorDataset, cfg: Config, step: int, plot: Path | None = None
) -> list:
    """Fit one mixture per unit on the (unaligned) units of up to ``max_points`` images;
    ``plot``: also draw the units' features with their anchors there."""
    a = cfg.anchoring
    rs = np.random.RandomState(cfg.train.seed + step)
    idx = np.sort(rs.choice(len(dataset), min(len(dataset), a.max_points), replace=False))
    current, model.anchors = model.anchors, None
    try:
        feats = torch.cat(
            [model.encode(dataset.images_at(idx[i : i + 1024])) for i in range(0, len(idx), 1024)]
        )
    finally:
        model.anchors = current
    units = fit_anchors(
        feats, seed=cfg.train.seed + step, n_init=a.n_init,  # feats are subsampled already
        em_iters=a.em_iters, split_threshold=a.split_threshold, max_splits=a.max_splits,
        max_components=a.max_components, min_weight=a.min_weight,
        previous=current.units if (a.warm_start and current is not None) else None,
    )  # fmt: skip
    if plot is not None:
        from factordiff.viz import save_anchor_plot

        save_anchor_plot(feats, units, plot)
    return units


def optimizer_state_tensors(opt: torch.optim.Optimizer) -> tuple[dict, dict]:
    """An optimizer's state as flat tensors (for safetensors) + JSON-able rest."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{name}"] = value
            else:
                scalars[f"{idx}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def restore_optimizer(opt: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for key, value in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    # The kernel choice (fused / foreach) belongs to this machine, not to the checkpoint's.
    kernels = ("fused", "foreach")
    groups = [
        {**saved, **{k: live[k] for k in kernels if k in live}}
        for saved, live in zip(meta["param_groups"], opt.param_groups, strict=True)
    ]
    opt.load_state_dict({"state": state, "param_groups": groups})


def make_adamw(params: list[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with the fused kernel where the device has one (4x faster step on this CPU)."""
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):  # a device without a fused AdamW kernel
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


class CompiledWithFallback:
    """``torch.compile(module)`` that falls back to eager when compilation fails.

    Compilation happens at the first call and needs a working C++ (CPU) or Triton (GPU)
    toolchain; a machine without one should train eagerly with a warning, not crash.
    """

    def __init__(self, module: nn.Module) -> None:
        self.eager = module
        self.compiled: Callable | None = torch.compile(module)

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except Exception as exc:  # noqa: BLE001 -- any compiler failure: train eagerly
                warnings.warn(
                    f"torch.compile failed ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
                    "training eagerly. Set train.compile=false to skip the attempt.",
                    stacklevel=2,
                )
                self.compiled = None
        return self.eager(*args)


#: Where the first-stage phase keeps its own checkpoints while it runs, apart from
#: ``RUN/checkpoints/``: ``latest_checkpoint`` and ``from_pretrained`` never see a half-trained
#: first stage. Removed once the step-0 checkpoint holds the finished first stage.
FIRST_STAGE_DIR = "first_stage"


def first_stage_checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / FIRST_STAGE_DIR


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
        torch.manual_seed(chunk_seed(cfg.train.seed, step, 10_000))
        x = model.prepare_images(dataset.images_at(data.rows(step, 0, 1)))
        with acc.autocast():
            loss, parts = fs.reconstruction_loss(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done = step + 1
        bar.set_postfix(rec_l1=f"{parts['rec_l1']:.4f}", refresh=False)
        if done % cfg.train.log_every == 0 or done == steps:
            logger.log(0, {"first_stage_step": done, **parts, "train_s": clock.seconds()})
        if stop_requested(stop, acc):
            bar.close()
            saved = save(done)
            signum = stop.signum or signal.SIGTERM
            raise TrainingStoppedError(
                f"stopped by {signal.Signals(signum).name} in the first-stage phase at step "
                f"{done} of {steps}; its checkpoint is {saved}. Resume with the same command "
                f"(factordiff train ... --out {run_dir}): the phase resumes at step {done}.",
                exit_code=128 + signum,
            )
        if done % cfg.train.checkpoint_every == 0 and done < steps:
            save(done)  # at the last step the step-0 checkpoint follows at once
    fs.requires_grad_(False).eval()
    fs.calibrate_scale(model.prepare_images(dataset.images_at(data.rows(0, 0, 1))))
    return True


def train(cfg: Config, run_dir: str | Path, *, progress: bool = True) -> Path:
    """Train (or resume) the run in ``run_dir``; returns its newest checkpoint."""
    run_dir = Path(run_dir)
    t = cfg.train
    # accelerate treats several processes without a GPU as DDP only when told cpu=True.
    multi_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    # accelerate keeps one global state per process; a second train() call in the same
    # process (library use, tests) may ask for another precision. The process group stays.
    AcceleratorState._reset_state()
    acc = Accelerator(mixed_precision=t.mixed_precision, cpu=multi_cpu)
    n_chunks = acc.num_processes * t.grad_accum
    if t.batch_size % n_chunks:
        raise ConfigError(
            f"train.batch_size {t.batch_size} must divide by processes x grad_accum = {n_chunks}"
        )
    cfg = prepare_run_dir(cfg, run_dir)
    dataset = load_dataset(cfg)
    cfg.data.image_size = resolve_image_size(cfg)
    torch.manual_seed(t.seed)  # same initial weights on every process
    model = build_model(cfg).to(acc.device)
    with ExitStack() as guards:
        stop = guards.enter_context(StopRequest())
        failure = None
        if acc.is_main_process:  # one writer: rank 0 owns the run directory
            try:
                check_run_dir(run_dir, checkpoint_bytes(model), t.keep_checkpoints)
                guards.enter_context(RunLock(run_dir))
                for partial in remove_partial_checkpoints(run_dir):
                    print(
                        f"removed {partial.name}, a checkpoint a killed process left half-written"
                    )
                save_config(cfg, run_dir / "config.yaml")
            except Exception as exc:  # noqa: BLE001 -- every rank must hear of it
                failure = str(exc) if isinstance(exc, RunDirError | OSError) else repr(exc)
        failures = [failure]
        broadcast_object_list(failures)  # every process stops, none waits forever
        if failures[0] is not None:
            raise RunDirError(failures[0])
        return _train_guarded(cfg, run_dir, acc, model, dataset, stop, progress)


def checkpoint_bytes(model: ImageModel) -> int:
    """Bytes of one checkpoint: the model, the EMA weights and AdamW's two moments."""
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    ema = sum(p.numel() * p.element_size() for p in model.ema_module.parameters())
    trained = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return size + ema + 2 * trained


def _train_guarded(
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
    data = StepBatches(len(dataset), t.batch_size, t.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    lr = t.base_lr * (t.batch_size if t.scale_lr else 1)
    optimizer = make_adamw(params, lr, t.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_multiplier(s, t))
    ema = EMAModel(model.ema_module.parameters(), decay=t.ema_decay)

    raw_optimizer = optimizer  # accelerate wraps it below; its state_dict lives here
    step = bad_steps = bad_streak = 0
    refit_pending = False  # a refit scheduled at the step a resumed run stopped at
    clock = TrainClock()
    ckpt = latest_checkpoint(run_dir)
    if ckpt is not None:  # resume: weights, EMA, optimizer, schedule; data follows from step
        state = load_state(ckpt)
        load_into(model, load_tensors(ckpt, "model"), str(ckpt / "model.safetensors"))
        ema_tensors = load_tensors(ckpt, "ema")
        names = [n for n, _ in model.ema_module.named_parameters()]
        ema.shadow_params = [ema_tensors[n].to(acc.device) for n in names]
        ema.optimization_step = state["ema_step"]
        restore_optimizer(optimizer, load_tensors(ckpt, "optimizer"), state["optimizer"])
        model.load_anchors(ckpt)
        scheduler.load_state_dict(state["lr_scheduler"])
        step = state["step"]
        bad_steps = state.get("bad_steps", 0)
        refit_pending = state.get("refit_pending", False)
        clock = TrainClock(state.get("train_s", 0.0))
        if acc.is_main_process:
            print(f"resuming {run_dir} from {ckpt.name} (step {step})")
            saved_chunks = state.get("processes", world) * state.get("grad_accum", t.grad_accum)
            if saved_chunks != world * t.grad_accum:
                exact = (
                    f" Set train.grad_accum={saved_chunks // world} to continue it exactly."
                    if saved_chunks % world == 0
                    else ""
                )
                print(
                    f"note: the checkpoint was trained as {saved_chunks} chunks per step "
                    f"(processes x grad_accum), this run uses {world} x {t.grad_accum}: the "
                    f"global batch is the same, the noise draws differ from an unbroken run.{exact}"
                )
    logger = RunLogger(run_dir, step, enabled=acc.is_main_process)

    def checkpoint() -> None:
        acc.wait_for_everyone()
        if acc.is_main_process:
            ema_names = [n for n, _ in model.ema_module.named_parameters()]
            opt_tensors, opt_meta = optimizer_state_tensors(raw_optimizer)
            tensors = {"model": model.state_dict(), "optimizer": opt_tensors,
                       "ema": dict(zip(ema_names, ema.shadow_params, strict=True))}  # fmt: skip
            if model.anchors is not None:
                tensors["anchors"] = model.anchors.state_tensors()
            save_checkpoint(
                run_dir, step,
                tensors,
                {"step": step, "images_seen": step * t.batch_size, **data.position(step),
                 "seed": t.seed, "rng": "per (seed, step, chunk); see factordiff.train",
                 "ema_step": ema.optimization_step, "optimizer": opt_meta,
                 "lr_scheduler": scheduler.state_dict(), "processes": world,
                 "grad_accum": t.grad_accum,
                 "bad_steps": bad_steps, "train_s": clock.seconds(),
                 "refit_pending": refit_scheduled(cfg, step, data.per_epoch)
                 and not refit_due(cfg, step, data.per_epoch)},
                keep=t.keep_checkpoints,
            )  # fmt: skip
        acc.wait_for_everyone()

    if ckpt is None and train_first_stage(
        model,
        data,
        dataset,
        cfg,
        logger,
        progress and acc.is_main_process,
        stop,
        acc,
        run_dir,
        clock,
    ):
        checkpoint()  # step 0: the trained first stage is never trained twice
    if acc.is_main_process:  # the step-0 checkpoint holds it now (or there was none to train)
        shutil.rmtree(first_stage_checkpoint_dir(run_dir), ignore_errors=True)

    latents = None
    to_see = (t.max_steps - step) * t.batch_size  # the global batch, over all processes
    if t.cache_latents and step < t.max_steps:
        if caching_pays(len(dataset), to_see):
            latents = cache_latents(model, dataset, cfg, acc, progress and acc.is_main_process)
        elif acc.is_main_process:
            print(
                f"train.cache_latents: not caching -- the run has {to_see:,} images left to see "
                f"of {len(dataset):,}, so encoding every image once would cost more than "
                "encoding each batch"
            )
    if t.channels_last:
        model.to(memory_format=torch.channels_last)
    ddp_model, optimizer = acc.prepare(model, optimizer)
    forward = CompiledWithFallback(ddp_model) if t.compile else ddp_model
    bar = tqdm(
        total=t.max_steps,
        initial=step,
        desc="train",
        disable=not (progress and acc.is_main_process),
    )
    shown: dict[str, str] = {}  # the progress bar's postfix
    loss_sum, loss_count, tick, images = (
        torch.zeros((), device=acc.device),
        0,
        time.perf_counter(),
        0,
    )
    batches = iter(
        device_batch_stream(dataset, data, cfg, step, rank, world, acc.device)
        if cfg.data.on_device
        else batch_stream(dataset, data, cfg, step, rank, world)
    )

    def refit() -> None:
        nonlocal tick
        start = time.perf_counter()
        plot = run_dir / "samples" / f"anchors_{step:08d}.png"
        units = [refit_anchors(model, dataset, cfg, step, plot) if acc.is_main_process else None]
        broadcast_object_list(units)  # every process aligns with rank 0's anchors
        model.set_anchors(units[0])
        seconds = time.perf_counter() - start
        logger.log(step, refit_log(units[0], seconds))
        tick += seconds  # a refit is not training throughput

    try:
        if refit_pending and step < t.max_steps:
            refit()
        while step < t.max_steps:
            ddp_model.train()
            step_loss = torch.zeros((), device=acc.device)
            # BatchNorm statistics move in the forward pass; a skipped step must not keep them
            bn_stats = [b.detach().clone() for b in model.buffers()]
            for micro in range(t.grad_accum):
                chunk = micro * world + rank
                seed = chunk_seed(t.seed, step, chunk)
                g = torch.Generator().manual_seed(seed)
                batch = next(batches)
                x = model.prepare_images(batch["image"])
                z0 = None if latents is None else latents[batch["index"].to(acc.device)]
                noise = torch.randn((len(x), *model.latent_shape), generator=g).to(acc.device)
                ts = sample_timesteps(len(x), cfg.diffusion, g).to(acc.device)
                torch.manual_seed(seed)  # dropout / skip-dropout masks
                sync = micro == t.grad_accum - 1
                with nullcontext() if sync else acc.no_sync(ddp_model):
                    loss = forward(x, noise, ts, z0) / t.grad_accum
                    acc.backward(loss)
                step_loss += loss.detach()
            # The gradients are all-reduced, so every process reaches the same verdict; a
            # non-finite loss anywhere makes them non-finite too.
            grad_norm = acc.clip_grad_norm_(params, t.grad_clip if t.grad_clip > 0 else math.inf)
            if torch.isfinite(grad_norm):
                optimizer.step()
                scheduler.step()
                ema.step(model.ema_module.parameters())
                loss_sum += step_loss
                loss_count += 1
                bad_streak = 0
            else:  # skip the update; the data moves on, so the run stays deterministic
                if t.mixed_precision == "fp16":
                    optimizer.step()  # the loss scaler skips it and lowers its scale
                for buffer, saved in zip(model.buffers(), bn_stats, strict=True):
                    buffer.copy_(saved)
                bad_steps += 1
                bad_streak += 1
                logger.log(step + 1, {"skipped_nonfinite_step": bad_steps})
            optimizer.zero_grad(set_to_none=True)
            step += 1
            images += t.batch_size
            # images/s every step (the loss only at log steps: reading it syncs a GPU)
            shown["img_s"] = f"{images / max(time.perf_counter() - tick, 1e-9):.0f}"
            bar.set_postfix(shown, refresh=False)
            bar.update(1)
            if bad_streak >= t.max_bad_steps:
                newest = latest_checkpoint(run_dir)
                raise TrainingStoppedError(
                    f"{bad_streak} steps in a row had a non-finite loss or gradient (up to step "
                    f"{step}); stopped. The last good checkpoint is "
                    f"{newest if newest else 'none (no checkpoint was written yet)'}. Lower "
                    "train.base_lr, set train.grad_clip, or train in fp32, then rerun to resume."
                )
            if refit_due(cfg, step, data.per_epoch):
                refit()

            if (step % t.log_every == 0 or step == t.max_steps) and loss_count:
                mean_loss = acc.reduce(loss_sum, "mean").item() / loss_count
                elapsed = time.perf_counter() - tick
                rate = images / elapsed
                pull = model.anchors.pop_stats() if model.anchors is not None else None
                logger.log(
                    step,
                    {"loss": mean_loss, "lr": scheduler.get_last_lr()[0], "images_per_s": rate,
                     "train_s": clock.seconds(), **(pull or {})},
                )  # fmt: skip
                shown["loss"] = f"{mean_loss:.4f}"
                loss_sum.zero_()
                loss_count, images, tick = 0, 0, time.perf_counter()
            stopping = stop_requested(stop, acc) and step < t.max_steps
            due = step % t.checkpoint_every == 0 or step == t.max_steps or stopping
            if due and not bad_streak:
                checkpoint()  # never in a streak of non-finite steps: keep the last good one
            if stopping:  # before any evaluation: a pre-empted job has seconds, not minutes
                raise TrainingStoppedError(
                    f"stopped by {signal.Signals(stop.signum or signal.SIGTERM).name} at step "
                    f"{step}; the newest good checkpoint is {latest_checkpoint(run_dir)}. Resume "
                    f"with the same command (factordiff train ... --out {run_dir}).",
                    exit_code=128 + (stop.signum or signal.SIGTERM),
                )
            if t.eval_every and (step % t.eval_every == 0 or step == t.max_steps):
                trained_s = clock.seconds()  # the scores are of the weights at this time
                with clock.paused():
                    if acc.is_main_process:
                        say = bar.write if progress else (lambda _: None)
                        say(f"step {step}: evaluating (protocol x {t.eval_scale}, EMA U-Net) ...")
                        scores = periodic_eval(model, ema, dataset, cfg, run_dir, step)
                        say(f"step {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
                        logger.log_eval(step, scores, trained_s)
                    acc.wait_for_everyone()
                tick = time.perf_counter()
    finally:
        bar.close()
        logger.close()
    if bad_streak:
        raise TrainingStoppedError(
            f"the run reached train.max_steps={t.max_steps} in a streak of {bad_streak} "
            f"non-finite steps, so its final weights were not saved; the newest good "
            f"checkpoint is {latest_checkpoint(run_dir)}."
        )
    return latest_checkpoint(run_dir)


def stop_requested(stop: StopRequest, acc: Accelerator) -> bool:
    """Whether any process was asked to stop (the processes must stop together)."""
    if acc.num_processes == 1:
        return stop.requested
    flag = torch.tensor(float(stop.requested), device=acc.device)
    return bool(acc.reduce(flag, "sum").item() > 0)


def periodic_eval(
    model: ImageModel, ema: EMAModel, dataset, cfg: Config, run_dir: Path, step: int
) -> dict:
    """Metrics on a subset of the protocol and a swap grid, with the EMA U-Net."""
    from factordiff import metrics
    from factordiff.viz import save_swap_grid

    scores: dict = {}
    if getattr(dataset, "has_ground_truth", True) and cfg.eval.metrics:
        names = [m for m in cfg.eval.metrics if m not in ("fid", "tad")]
        res = metrics.evaluate(
            model.represent, dataset, names, cfg.eval.seed, scale=cfg.train.eval_scale,
            representation=cfg.eval.representation, progress=False,
        )  # fmt: skip
        scores = metrics.headline(res)
    ema.store(model.ema_module.parameters())
    ema.copy_to(model.ema_module.parameters())
    try:
        save_swap_grid(
            model, dataset, run_dir / "samples" / f"swap_{step:08d}.png", seed=cfg.eval.seed
        )
    finally:
        ema.restore(model.ema_module.parameters())
    return scores


def _logged_step(line: str) -> float:
    """The step of a ``metrics.jsonl`` line; a line torn by a killed process counts as
    past every checkpoint, so it is dropped on resume."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return math.inf


def _plain(value):
    """JSON-friendly: ints and lists as they are, tensors and numpy scalars as floats."""
    return value if isinstance(value, int | list) else float(value)


class RunLogger:
    """``metrics.jsonl`` (one JSON object per line) + TensorBoard events, main process only.

    On resume, lines past the checkpoint's step are dropped: they belong to steps that
    will be trained again.
    """

    def __init__(self, run_dir: Path, step: int, enabled: bool) -> None:
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.writer = None
        if not enabled:
            return
        if self.path.is_file():
            kept = [ln for ln in self.path.read_text().splitlines() if _logged_step(ln) <= step]
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(ln + "\n" for ln in kept))
            tmp.replace(self.path)
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=step + 1 if step else None)
        except ImportError:  # tensorboard is optional for library use
            self.writer = None

    def keep_first_stage_until(self, step: int) -> None:
        """Drop the first-stage lines past ``step``: the resumed phase logs them again."""
        if not self.enabled or not self.path.is_file():
            return
        lines = self.path.read_text().splitlines()
        kept = [ln for ln in lines if json.loads(ln).get("first_stage_step", 0) <= step]
        if len(kept) < len(lines):
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(ln + "\n" for ln in kept))
            tmp.replace(self.path)

    def _write(self, record: dict) -> None:
        try:
            with open(self.path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        except OSError as exc:  # disk full mid-run: say so, the checkpoints are intact
            newest = latest_checkpoint(self.path.parent)
            raise RunDirError(
                f"cannot append to {self.path}: {exc.strerror or exc}. Checkpoints up to "
                f"{newest.name if newest else 'none'} are intact; free space and rerun to resume."
            ) from None

    def log(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        self._write({"step": step, **{k: _plain(v) for k, v in values.items()}})
        if self.writer is not None:
            for k, v in values.items():
                if isinstance(v, int | float):
                    self.writer.add_scalar(f"train/{k}", v, step)
                elif isinstance(v, list) and all(isinstance(x, int | float) for x in v):
                    for i, x in enumerate(v):  # per unit (DyGA): one curve per unit
                        self.writer.add_scalar(f"train/{k}/{i}", x, step)

    def log_eval(self, step: int, scores: dict, train_s: float) -> None:
        if not self.enabled:
            return
        self._write({"step": step, "train_s": train_s, "eval": scores})
        if self.writer is not None:
            for k, v in scores.items():
                if isinstance(v, int | float) and math.isfinite(v):
                    self.writer.add_scalar(f"eval/{k}", v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

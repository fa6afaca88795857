"""The run directory's rules: which config a run keeps across resumes, where the
first-stage phase checkpoints, and claiming the directory before training starts."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from factordiff.checkpoint import remove_partial_checkpoints
from factordiff.config import Config, load_config, save_config
from factordiff.errors import ConfigError
from factordiff.pipeline import ImageModel
from factordiff.training.run_guard import RunDirError, RunLock, check_run_dir

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


#: Where the first-stage phase keeps its own checkpoints while it runs, apart from
#: ``RUN/checkpoints/``: ``latest_checkpoint`` and ``from_pretrained`` never see a half-trained
#: first stage. Removed once the step-0 checkpoint holds the finished first stage.
FIRST_STAGE_DIR = "first_stage"


def first_stage_checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / FIRST_STAGE_DIR


def checkpoint_bytes(model: ImageModel) -> int:
    """Bytes of one checkpoint: the model, the EMA weights and AdamW's two moments."""
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    ema = sum(p.numel() * p.element_size() for p in model.ema_module.parameters())
    trained = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return size + ema + 2 * trained


def claim_run_dir(
    cfg: Config, run_dir: Path, model: ImageModel, acc: Accelerator, guards: ExitStack
) -> None:
    """Rank 0 checks room and permissions, takes the lock (held until ``guards`` closes),
    removes half-written checkpoints and writes the config; every rank hears of a failure,
    so none waits forever for the others."""
    failure = None
    if acc.is_main_process:  # one writer: rank 0 owns the run directory
        try:
            check_run_dir(run_dir, checkpoint_bytes(model), cfg.train.keep_checkpoints)
            guards.enter_context(RunLock(run_dir))
            for partial in remove_partial_checkpoints(run_dir):
                print(f"removed {partial.name}, a checkpoint a killed process left half-written")
            save_config(cfg, run_dir / "config.yaml")
        except Exception as exc:  # noqa: BLE001 -- every rank must hear of it
            failure = str(exc) if isinstance(exc, RunDirError | OSError) else repr(exc)
    failures = [failure]
    broadcast_object_list(failures)
    if failures[0] is not None:
        raise RunDirError(failures[0])

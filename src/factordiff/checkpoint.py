"""Run-directory checkpoints: safetensors for tensors, JSON for everything else.

A checkpoint is a directory ``checkpoints/step_00001000/`` holding ``*.safetensors`` files
and ``state.json``. It is written under a temporary name and renamed into place only when
complete, so a crash mid-write never leaves a checkpoint that looks finished; readers
only consider ``step_*`` directories that contain ``state.json``. Nothing is unpickled.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from factordiff.errors import CheckpointError

PREFIX = "step_"
TMP_PREFIX = ".tmp-"
OLD_PREFIX = ".old-"


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = [
        p for p in root.iterdir()
        if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()
        and (p / "state.json").is_file()
    ]  # fmt: skip
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    tensors: dict[str, dict[str, torch.Tensor]],
    state: dict,
    keep: int = 3,
) -> Path:
    """Write ``tensors[name]`` to ``name.safetensors`` and ``state`` to ``state.json``
    atomically; then delete all but the newest ``keep`` checkpoints."""
    root = checkpoint_dir(run_dir)
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f"{TMP_PREFIX}{final.name}-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        for name, group in tensors.items():
            save_file(_contiguous(group), tmp / f"{name}.safetensors")
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
        for f in tmp.iterdir():  # data on disk before the rename makes it visible
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    except (OSError, SafetensorError) as exc:  # disk full, quota, read-only: earlier ones stay
        shutil.rmtree(tmp, ignore_errors=True)
        newest = latest_checkpoint(run_dir)
        reason = getattr(exc, "strerror", None) or str(exc)
        raise CheckpointError(
            f"could not write checkpoint {final}: {reason}. The run's earlier "
            f"checkpoints are intact (newest: {newest.name if newest else 'none'}); free "
            "space and rerun the same command to resume."
        ) from None
    if final.exists():  # re-saving a step (e.g. the final one): swap it out, then drop it
        old = root / f"{OLD_PREFIX}{final.name}"
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        # renamed first: a kill mid-delete leaves a partial directory, never a step_* one
        doomed = root / f"{TMP_PREFIX}pruned-{old.name}"
        old.rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)
    return final


def remove_partial_checkpoints(run_dir: str | Path) -> list[Path]:
    """Delete checkpoint directories a killed process left half-written (call it only
    while holding the run's lock: then no writer is alive). Returns what was removed."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    for old in root.glob(f"{OLD_PREFIX}*"):  # killed while swapping a re-saved step
        final = root / old.name[len(OLD_PREFIX) :]
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.rename(final)
    partial = sorted(root.glob(f"{TMP_PREFIX}*"))
    for path in partial:
        shutil.rmtree(path, ignore_errors=True)
    return partial


def load_tensors(path: Path, name: str) -> dict[str, torch.Tensor]:
    file = path / f"{name}.safetensors"
    if not file.is_file():
        raise CheckpointError(f"{file} is missing")
    try:
        return load_file(file)
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{file} cannot be read ({exc})") from None


def load_state(path: Path) -> dict:
    try:
        return json.loads((path / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path / 'state.json'} cannot be read ({exc})") from None


def load_into(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with a readable message on an architecture mismatch."""
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own.keys() & tensors.keys()
        if own[k].shape != tensors[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if shapes:
            parts.append(f"{len(shapes)} with other shapes (e.g. {shapes[0]})")
        raise CheckpointError(
            f"{source} does not fit this model's architecture/config: "
            + "; ".join(parts)
            + ". Was it written with another config?"
        )
    module.load_state_dict(tensors)


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

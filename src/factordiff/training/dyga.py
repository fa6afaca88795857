"""DyGA during training: when the anchors are refit, the refit itself, and what it logs.

The loop only asks ``refit_due`` after each step and calls ``refit``. Of the ``anchoring``
section this module reads when to refit (``enabled``, ``every_steps``, ``every_epochs``) and
how many images to fit on (``max_points``); the fit's own options are read by
``models.anchoring.fit_from_section``, the pull's by ``Anchors.from_section``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from factordiff.config import Config
from factordiff.data.base import FactorDataset
from factordiff.models.anchoring import fit_from_section
from factordiff.pipeline import ImageModel
from factordiff.training.run_log import RunLogger


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
            "anchor_merged": [u.merged for u in units],
            "anchor_filtered": [u.filtered for u in units]}  # fmt: skip


def refit_anchors(
    model: ImageModel, dataset: FactorDataset, cfg: Config, step: int, plot: Path | None = None
) -> list:
    """Fit one mixture per unit on the unaligned features anchoring acts on (tokens, or
    scalars as (n, N, 1)) of up to ``max_points`` images;
    ``plot``: also draw the units' features with their anchors there."""
    a = cfg.anchoring
    rs = np.random.RandomState(cfg.train.seed + step)
    idx = np.sort(rs.choice(len(dataset), min(len(dataset), a.max_points), replace=False))
    current, model.anchors = model.anchors, None
    try:
        feats = torch.cat(
            [model.anchored_features(dataset.images_at(idx[i : i + 1024]))
             for i in range(0, len(idx), 1024)]
        )  # fmt: skip
    finally:
        model.anchors = current
    units = fit_from_section(  # feats are max_points at most already
        feats, a, seed=cfg.train.seed + step, previous=current.units if current else None
    )
    if plot is not None:
        from factordiff.viz import save_anchor_plot

        save_anchor_plot(feats, units, plot)
    return units


def refit(
    model: ImageModel,
    dataset: FactorDataset,
    cfg: Config,
    step: int,
    run_dir: Path,
    acc: Accelerator,
    logger: RunLogger,
) -> float:
    """Refit on rank 0, align every process to its anchors, log it; returns the seconds
    it took (not training throughput)."""
    start = time.perf_counter()
    plot = run_dir / "samples" / f"anchors_{step:08d}.png"
    units = [refit_anchors(model, dataset, cfg, step, plot) if acc.is_main_process else None]
    broadcast_object_list(units)  # every process aligns with rank 0's anchors
    model.set_anchors(units[0])
    seconds = time.perf_counter() - start
    logger.log(step, refit_log(units[0], seconds))
    if plot.is_file():
        logger.log_figure("anchors", plot, step)
    return seconds

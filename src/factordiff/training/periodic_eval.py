"""Evaluation during training: metrics on a share of the protocol and a swap grid, with
the EMA weights swapped in for the duration."""

from __future__ import annotations

from pathlib import Path

from diffusers.training_utils import EMAModel

from factordiff.config import Config
from factordiff.pipeline import ImageModel


def periodic_eval(
    model: ImageModel, ema: EMAModel, dataset, cfg: Config, run_dir: Path, step: int
) -> dict:
    """Metrics on a subset of the protocol and a swap grid, with the EMA U-Net."""
    from factordiff import metrics
    from factordiff.metric_registry import METRICS, resolve
    from factordiff.viz import save_swap_grid

    scores: dict = {}
    if getattr(dataset, "has_ground_truth", True) and cfg.eval.metrics:
        names = [m for m in resolve(cfg.eval.metrics) if METRICS[m].inputs in ("arrays", "batches")]
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

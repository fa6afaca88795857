"""Charts of a run (matplotlib, Agg, PNG): the DCI importance matrix, training curves,
per-unit value histograms with the DyGA anchors, downstream accuracy against labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from factordiff.viz import _save_figure, plt, unit_panels


def save_importance_heatmap(
    importance: np.ndarray, factor_names: list[str], out: str | Path
) -> Path:
    """Units x factors: each cell the trees' importance of unit i for factor j (DCI's
    R matrix). A disentangled model shows one bright cell per row and per column."""
    r = np.asarray(importance, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * r.shape[1], 0.8 + 0.32 * r.shape[0]))
    im = ax.imshow(r, cmap="viridis", aspect="auto", vmin=0)
    ax.set_xticks(range(r.shape[1]), factor_names, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(r.shape[0]), [f"unit {i}" for i in range(r.shape[0])], fontsize=8)
    ax.set_title("DCI importance (unit x factor)", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.05)
    return _save_figure(fig, out, dpi=100)


def read_metrics_log(path: str | Path) -> list[dict]:
    """``metrics.jsonl`` records, skipping a line torn by a killed process."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def save_training_curves(metrics_log: str | Path, out: str | Path) -> Path:
    """Loss (and the first stage's reconstruction error, and periodic-eval scores when
    present) against the training step."""
    records = read_metrics_log(metrics_log)
    loss = [(r["step"], r["loss"]) for r in records if "loss" in r]
    rec = [(r["first_stage_step"], r["rec_l1"]) for r in records if "rec_l1" in r]
    evals = [(r["step"], r["eval"]) for r in records if isinstance(r.get("eval"), dict)]
    panels = [p for p in (loss, rec, evals) if p]
    if not panels:
        raise ValueError(f"{metrics_log} holds no training records to plot")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.0), squeeze=False)
    ax_iter = iter(axes[0])
    if loss:
        ax = next(ax_iter)
        ax.plot(*zip(*loss, strict=True), lw=1)
        ax.set(xlabel="step", ylabel="diffusion loss", title="training loss")
    if rec:
        ax = next(ax_iter)
        ax.plot(*zip(*rec, strict=True), lw=1, color="tab:orange")
        ax.set(xlabel="first-stage step", ylabel="L1", title="autoencoder reconstruction")
    if evals:
        ax = next(ax_iter)
        keys = [k for k, v in evals[-1][1].items() if isinstance(v, int | float)][:6]
        for key in keys:
            pts = [(s, e[key]) for s, e in evals if isinstance(e.get(key), int | float)]
            ax.plot(*zip(*pts, strict=True), marker="o", ms=3, label=key)
        ax.set(xlabel="step", ylabel="score", title="periodic evaluation")
        ax.legend(fontsize=6)
    return _save_figure(fig, out, dpi=90)


def save_unit_histograms(
    codes: np.ndarray, out: str | Path, anchors: list[np.ndarray] | None = None
) -> Path:
    """Per unit, the histogram of its (1-D) code over images; DyGA anchors as red ticks
    (projected like the codes)."""
    codes = np.asarray(codes, dtype=np.float64)
    fig, axes = unit_panels(codes.shape[1], height=1.9)
    for u, ax in enumerate(axes):
        ax.hist(codes[:, u], bins=40, color="tab:blue", alpha=0.8)
        if anchors is not None:
            for a in anchors[u]:
                ax.axvline(a, color="tab:red", lw=1)
        title = f"unit {u}" + (f": {len(anchors[u])} anchors" if anchors is not None else "")
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=6)
        ax.set_yticks([])
    return _save_figure(fig, out, dpi=90)


def save_downstream_plot(results: dict[str, dict], out: str | Path) -> Path:
    """Mean test accuracy against training-set size, one line per representation."""
    fig, ax = plt.subplots(figsize=(4.4, 3.2))
    for name, res in results.items():
        acc = {int(n): v for n, v in res["accuracy"].items()}  # JSON keys are strings
        sizes = sorted(acc)
        ax.plot(sizes, [acc[n] for n in sizes], marker="o", label=name)
    ax.set(xscale="log", xlabel="training examples", ylabel="mean test accuracy",
           title="downstream: gradient boosted trees")  # fmt: skip
    ax.legend(fontsize=8)
    return _save_figure(fig, out, dpi=100)

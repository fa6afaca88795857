"""Charts of a run (matplotlib, Agg, PNG): the DCI importance matrix, training curves,
per-unit value histograms with the DyGA anchors, downstream accuracy against labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from factordiff.viz.figure import plt, save_figure, unit_panels


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
    return save_figure(fig, out, dpi=100)


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
    """Loss (and, when logged, its terms, the first stage's reconstruction error and
    periodic-eval scores) against the training step."""
    records = read_metrics_log(metrics_log)
    loss = [(r["step"], r["loss"]) for r in records if "loss" in r]
    term_names = sorted({k for r in records for k in r if k.startswith("loss_")})
    terms = {k: [(r["step"], r[k]) for r in records if k in r] for k in term_names}
    rec = [(r["first_stage_step"], r["rec_l1"]) for r in records if "rec_l1" in r]
    evals = [(r["step"], r["eval"]) for r in records if isinstance(r.get("eval"), dict)]
    panels = [p for p in (loss, terms, rec, evals) if p]
    if not panels:
        raise ValueError(f"{metrics_log} holds no training records to plot")
    legend_room = 1.9 if evals else 0.0  # the periodic-eval legend sits right of its panel
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.2 * len(panels) + legend_room, 3.0), squeeze=False
    )
    ax_iter = iter(axes[0])
    if loss:
        ax = next(ax_iter)
        ax.plot(*zip(*loss, strict=True), lw=1)
        ax.set(xlabel="step", ylabel="loss", title="training loss")
    if terms:  # a VAE's reconstruction, KL, TC, discriminator: each on its own scale
        ax = next(ax_iter)
        for name, pts in terms.items():
            ax.plot(*zip(*pts, strict=True), lw=1, label=name.removeprefix("loss_"))
        ax.set(xlabel="step", ylabel="term (symlog)", title="loss terms", yscale="symlog")
        ax.legend(fontsize=7)
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
        # outside the axes: inside, it covered the curves (they fill the panel's top)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    return save_figure(fig, out, dpi=90)


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
    return save_figure(fig, out, dpi=90)


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
    return save_figure(fig, out, dpi=100)


def has_anchoring_records(metrics_log: str | Path) -> bool:
    return any("anchor_fit_s" in r or "anchor_lam" in r for r in read_metrics_log(metrics_log))


def save_anchoring_plot(metrics_log: str | Path, out: str | Path) -> Path:
    """What DyGA did during training, from ``metrics.jsonl``: per unit, lam and the move
    toward the anchor as a share of the distance to it (log steps), the share of
    exactly-zero token entries, and the number of anchors K at each refit. Flat zeros in
    the first two panels mean the pull did nothing."""
    records = read_metrics_log(metrics_log)
    pulls = [r for r in records if "anchor_lam" in r]
    fits = [r for r in records if "anchor_fit_s" in r and isinstance(r.get("anchors"), list)]
    if not pulls and not fits:
        raise ValueError(f"{metrics_log} holds no anchoring records")
    fig, axes = plt.subplots(1, 4, figsize=(15.0, 3.0))
    steps = [r["step"] for r in pulls]
    panels = [("anchor_lam", "lam (mean per unit)"),
              ("anchor_move", "move / distance to anchor"),
              ("token_zero_share", "share of exact zeros in tokens")]  # fmt: skip
    for ax, (key, title) in zip(axes[:3], panels, strict=True):
        if pulls:
            values = np.array([r[key] for r in pulls], dtype=np.float64)
            for u in range(values.shape[1]):
                ax.plot(steps, values[:, u], lw=1, marker=".", ms=3, label=f"unit {u}")
        ax.set(xlabel="step", title=title)
        ax.set_ylim(0, 1.0 if key == "token_zero_share" else None)
    if pulls and len(pulls[0]["anchor_lam"]) <= 12:
        axes[0].legend(fontsize=6, ncol=2)
    ax = axes[3]
    if fits:
        k = np.array([r["anchors"] for r in fits])
        for u in range(k.shape[1]):
            ax.plot([r["step"] for r in fits], k[:, u], marker="o", ms=3, lw=1)
        splits = sum(sum(r.get("anchor_splits") or [0]) for r in fits)
        filtered = sum(sum(r.get("anchor_filtered") or [0]) for r in fits)
        ax.set_title(f"anchors K per unit ({splits} splits, {filtered} filtered)", fontsize=9)
    ax.set(xlabel="refit step")
    return save_figure(fig, out, dpi=90)


def save_anchor_plot(features, units, out: str | Path, max_points: int = 2000) -> Path:
    """Per latent unit: its features projected on their first two principal axes, with the
    DyGA anchors (Gaussian means) on top. features (n, N, D); units: fitted ``UnitMixture``s."""
    feats = np.asarray(features, dtype=np.float64)[:max_points]
    fig, axes = unit_panels(feats.shape[1])
    for u, ax in enumerate(axes):
        x = feats[:, u]
        mean = x.mean(0)
        _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
        axes_2d = vt[:2].T if vt.shape[0] > 1 else np.pad(vt.T, ((0, 0), (0, 1)))
        pts = (x - mean) @ axes_2d
        anchors = (units[u].means.cpu().numpy() - mean) @ axes_2d
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.3, color="tab:blue")
        ax.scatter(anchors[:, 0], anchors[:, 1], marker="x", s=40, color="tab:red")
        ax.set_title(f"unit {u}: {units[u].n_components} anchors", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    return save_figure(fig, out, dpi=90)

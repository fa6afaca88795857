"""Labelled image grids: factor sweeps, latent interchange, traversals, samples,
reconstructions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from factordiff.data.base import FactorDataset
from factordiff.viz.figure import plt, save_figure


def factor_sweep(
    dataset: FactorDataset, n_cols: int = 8, seed: int = 0
) -> tuple[np.ndarray, list[int]]:
    """Images (n_factors, n_cols, H, W, C) and the filled cells per row.

    Row i walks factor i across its range with the other factors fixed: one base
    configuration is sampled (seeded) and factor i takes ``n_cols`` classes spread evenly
    over its range (all classes when it has fewer; the rest of the row is empty).
    Datasets that are not a full grid (an image folder listing some combinations) show,
    per factor, existing images with distinct values of it, sharing the other factors
    with the base image where such images exist.
    """
    base = dataset.sample_factors(1, np.random.RandomState(seed))[0]
    present = None if getattr(dataset, "is_grid", True) else dataset.row_factors
    rows, counts = [], []
    for i, size in enumerate(dataset.factor_sizes):
        if present is None:
            classes = np.unique(np.linspace(0, size - 1, min(n_cols, size)).round().astype(int))
            factors = np.repeat(base[None], len(classes), axis=0)
            factors[:, i] = classes
        else:
            factors = _existing_sweep(present, base, i, n_cols)
        imgs = dataset.images(factors)
        pad = np.zeros((n_cols - len(imgs), *imgs.shape[1:]), dtype=np.uint8)
        rows.append(np.concatenate([imgs, pad]))
        counts.append(len(imgs))
    return np.stack(rows), counts


def _existing_sweep(present: np.ndarray, base: np.ndarray, i: int, n_cols: int) -> np.ndarray:
    """Existing factor rows with distinct values of factor ``i``, evenly spread."""
    same_rest = (np.delete(present, i, axis=1) == np.delete(base, i)).all(axis=1)
    candidates = present[same_rest] if same_rest.sum() >= 2 else present
    _, first = np.unique(candidates[:, i], return_index=True)
    picked = candidates[np.sort(first)]
    picked = picked[np.argsort(picked[:, i], kind="stable")]
    keep = np.unique(np.linspace(0, len(picked) - 1, min(n_cols, len(picked))).round().astype(int))
    return picked[keep]


def save_grid(
    images: np.ndarray,
    out: str | Path,
    row_labels: list[str] | None = None,
    col_labels: list[str] | None = None,
    title: str | None = None,
    cell_inches: float = 0.9,
    row_counts: list[int] | None = None,
) -> Path:
    """Save images (rows, cols, H, W, C) as one labelled PNG.

    Cells of row r past ``row_counts[r]`` stay blank (factors with fewer classes).
    """
    n_rows, n_cols = images.shape[:2]
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(cell_inches * n_cols + 1.6, cell_inches * n_rows + (0.5 if title else 0.1)),
        squeeze=False,
    )
    for r in range(n_rows):
        for c in range(n_cols):
            ax = axes[r, c]
            if row_counts is not None and c >= row_counts[r]:
                ax.axis("off")
                continue
            img = images[r, c]
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c == 0 and row_labels:
                ax.set_ylabel(row_labels[r], rotation=0, ha="right", va="center", fontsize=9)
            if r == 0 and col_labels and c < len(col_labels):
                ax.set_title(col_labels[c], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    return save_figure(fig, out, dpi=100)


def save_factor_sweep(
    dataset: FactorDataset, out: str | Path, n_cols: int = 8, seed: int = 0
) -> Path:
    """The ``factordiff data show`` figure: one row per factor, labelled with its name."""
    grid, counts = factor_sweep(dataset, n_cols=n_cols, seed=seed)
    labels = [f"{n} ({s})" for n, s in zip(dataset.factor_names, dataset.factor_sizes, strict=True)]
    title = f"{dataset.name}: one factor per row"
    return save_grid(grid, out, row_labels=labels, title=title, row_counts=counts)


def _pairs(dataset, n_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rs = np.random.RandomState(seed)
    idx = rs.choice(len(dataset), size=2 * n_pairs, replace=False)
    return dataset.images_at(np.sort(idx[:n_pairs])), dataset.images_at(np.sort(idx[n_pairs:]))


def as_rgb(images: np.ndarray) -> np.ndarray:
    return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images


def swap_grid(
    model, images_a: np.ndarray, images_b: np.ndarray, steps: int | None = None, seed: int = 0
) -> np.ndarray:
    """(pairs, 3 + N, H, W, 3): source, the source regenerated from its own units
    (unswapped), target, then the source with unit k from the target.

    The unswapped regenerations and all swaps of all pairs are generated in one batched
    DDIM run from the same noise, so a swap column differs from the "source regen." column
    only through its unit; what differs between source and source regen. (hue drift, lost
    shape) is reconstruction error, not the swap's effect.
    """
    import torch

    units_a, units_b = model.encode(images_a), model.encode(images_b)
    n_pairs, n_units = units_a.shape[:2]
    per = n_units + 1  # row 0 of each pair: unswapped
    batch = units_a.repeat_interleave(per, dim=0).clone()
    rows = torch.arange(n_pairs * per)
    unit = rows % per - 1
    hit = unit >= 0
    donors = units_b.repeat_interleave(per, dim=0)
    batch[rows[hit], unit[hit]] = donors[rows[hit], unit[hit]]
    out = model.decode(batch, steps, seed=seed)
    out = out.reshape(n_pairs, per, *out.shape[1:])
    size = out.shape[2]
    sources = _resize_uint8(as_rgb(images_a), size)[:, None]
    targets = _resize_uint8(as_rgb(images_b), size)[:, None]
    return np.concatenate([sources, out[:, :1], targets, out[:, 1:]], axis=1)


def _resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
    if images.shape[1] == size:
        return images
    from factordiff.data.loader import to_float, to_uint8

    return to_uint8(to_float(images, size))


def save_swap_grid(
    model, dataset, out: str | Path, n_pairs: int = 4, steps: int | None = None, seed: int = 0
) -> Path:
    """Latent interchange for ``n_pairs`` random pairs of ``dataset`` as a labelled PNG."""
    a, b = _pairs(dataset, n_pairs, seed)
    grid = swap_grid(model, a, b, steps, seed)
    n_units = grid.shape[1] - 3
    return save_grid(
        grid, out,
        row_labels=[f"pair {i}" for i in range(n_pairs)],
        col_labels=["source", "source regen.", "target", *[f"unit {k}" for k in range(n_units)]],
        title="latent interchange: source with one unit from the target\n"
              "(source regen.: the source from its own units, same noise as the swaps)",
    )  # fmt: skip


def traverse_units(
    model, image: np.ndarray, reference: np.ndarray, n_steps: int = 7, over: str = "data"
) -> tuple[list, list[list[str]]]:
    """Per unit, the tokens of ``image`` with that unit walked across its range.

    ``over="data"``: the unit's scalar takes ``n_steps`` quantiles (2 % .. 98 %) of its
    values on ``reference`` images, the other scalars fixed. ``over="anchors"`` (DyGA):
    the unit's token takes each of its anchors in turn, ordered along their main axis.
    Returns one (steps, N, D) tensor per unit and the column labels.
    """
    import torch

    base = model.scalars(image[None])
    walks, labels = [], []
    if over == "anchors":
        if model.anchors is None:
            raise ValueError("over='anchors' needs a DyGA model with fitted anchors")
        tokens = model.units_from_scalars(base)
        for k, unit in enumerate(model.anchors.units):
            anchors = unit.anchor_positions(tokens.device, tokens.dtype)
            centred = anchors - anchors.mean(0)
            axis = torch.linalg.svd(centred, full_matrices=False)[2][0]
            order = torch.argsort(centred @ axis)
            walk = tokens.repeat(len(order), 1, 1)
            walk[:, k] = anchors[order]
            walks.append(walk)
            labels.append([f"anchor {int(j)}" for j in order])
        return walks, labels
    if over != "data":
        raise ValueError(f"over must be 'data' or 'anchors', got {over!r}")
    values = model.scalars(reference).cpu()
    q = torch.linspace(0.02, 0.98, n_steps, dtype=values.dtype)
    for k in range(values.shape[1]):
        grid = torch.quantile(values[:, k], q)
        scal = base.cpu().repeat(n_steps, 1)
        scal[:, k] = grid
        walks.append(model.units_from_scalars(scal))
        labels.append([f"{v:.2f}" for v in grid.tolist()])
    return walks, labels


def save_traverse_grid(
    model, dataset, out: str | Path, n_steps: int = 7, over: str = "data",
    steps: int | None = None, seed: int = 0, index: int | None = None,
) -> Path:  # fmt: skip
    """``factordiff traverse``: one row per unit, its value walked with the rest fixed.

    Each row starts with the real image and its unswapped regeneration (from its own,
    unmodified units, with the same DDIM noise as the walk), so a colour or shape that
    already differs there is reconstruction drift, not the traversal's effect. In data
    mode a row label gives the walked scalar range and the image's own value.
    """
    import torch

    rs = np.random.RandomState(seed)
    i = int(rs.randint(len(dataset))) if index is None else index
    image = as_rgb(dataset.images_at(np.array([i])))[0]
    reference = as_rgb(dataset.images_at(np.sort(rs.choice(len(dataset), min(len(dataset), 1000),
                                                         replace=False))))  # fmt: skip
    walks, labels = traverse_units(model, image, reference, n_steps, over)
    width = max(len(w) for w in walks)
    own = model.encode(image[None]).to(walks[0].device, walks[0].dtype)
    out_imgs = model.decode(torch.cat([own, *walks]), steps, seed=seed)  # one noise for all
    regen, out_imgs = out_imgs[:1], out_imgs[1:]
    rows, start = [], 0
    for w in walks:
        row = out_imgs[start : start + len(w)]
        start += len(w)
        pad = np.zeros((width - len(w), *row.shape[1:]), dtype=np.uint8)
        rows.append(np.concatenate([row, pad]))
    source = _resize_uint8(image[None], out_imgs.shape[1])
    lead = np.repeat(np.concatenate([source, regen])[None], len(rows), axis=0)
    grid = np.concatenate([lead, np.stack(rows)], axis=1)
    row_labels = [f"unit {k}" for k in range(len(walks))]
    if over == "data":
        values = model.scalars(image[None])[0].tolist()
        row_labels = [f"unit {k}\n{lab[0]} .. {lab[-1]}\n(image: {values[k]:.2f})"
                      for k, lab in enumerate(labels)]  # fmt: skip
    quantiles = [f"{p:.0f} %" for p in np.linspace(2, 98, n_steps)]
    return save_grid(
        grid, out,
        row_labels=row_labels,
        col_labels=["image", "regen.", *quantiles] if over == "data" else ["image", "regen."],
        title=f"traversal of each unit over the {over} (image {i}), others fixed\n"
              "(regen.: the image from its own units, same noise as the walk)",
        row_counts=[len(w) + 2 for w in walks],
    )  # fmt: skip


def save_sample_grid(
    model, dataset, out: str | Path, n_images: int = 16, steps: int | None = None, seed: int = 0
) -> Path:
    """Unconditional-style samples: each unit of each sample taken from a different random
    image (units drawn independently from their marginals), so the grid shows new
    combinations of whatever the units encode."""
    import torch

    rs = np.random.RandomState(seed + 2)
    n_units = model.n_units
    pool = as_rgb(dataset.images_at(np.sort(rs.choice(len(dataset), n_images * 2, replace=False))))
    units = model.encode(pool)
    pick = torch.from_numpy(rs.randint(len(pool), size=(n_images, n_units)))
    mixed = units[pick, torch.arange(n_units)]  # (n_images, N, D)
    images = model.decode(mixed, steps, seed=seed)
    cols = min(8, n_images)
    grid = images[: (n_images // cols) * cols].reshape(-1, cols, *images.shape[1:])
    return save_grid(grid, out, title="samples: every unit from a different image")


def save_reconstruction_grid(
    model, dataset, out: str | Path, n_images: int = 8, steps: int | None = None, seed: int = 0
) -> Path:
    """Originals (top row), what a learned first stage keeps of them (its encode/decode:
    what the diffusion loss can ask the units for), and their regenerations from the units
    alone (bottom row)."""
    rs = np.random.RandomState(seed + 1)
    images = as_rgb(dataset.images_at(np.sort(rs.choice(len(dataset), n_images, replace=False))))
    recon = model.reconstruct(images, steps, seed=seed)
    rows, labels = [_resize_uint8(images, recon.shape[1])], ["original"]
    first_stage = getattr(model, "first_stage", None)  # the VAE baselines have none
    if first_stage is not None and first_stage.learned:
        rows.append(model.autoencode(images))
        labels.append("first stage")
    return save_grid(
        np.stack([*rows, recon]), out, row_labels=[*labels, "generated"],
        title="reconstruction from the latent units (DDIM)",
    )  # fmt: skip

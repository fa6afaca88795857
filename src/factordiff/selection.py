"""Model selection without labels: the UDR of several trained runs on the same images.

Every score a user gets from ``factordiff eval`` needs factor labels. On their own image
folder most users have none, yet they still need to know which of their runs (seeds, unit
counts, DyGA on or off) to keep; UDR (``factordiff.metrics.udr``) ranks runs by how much
they agree with each other. This module loads the runs, checks that they were trained on
the same data, encodes one shared sample of its images with each, and scores them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from factordiff.errors import FactordiffError
from factordiff.metrics.representation import reduce_representation
from factordiff.metrics.udr import udr

#: disentanglement_lib's ``udr_sklearn.num_data_points``
DEFAULT_IMAGES = 1000


def udr_of_runs(
    runs: list[str | Path],
    n_images: int = DEFAULT_IMAGES,
    correlation: str = "lasso",
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """UDR of each run in ``runs`` (run directories or shipped model names), on ``n_images``
    images drawn with ``RandomState(seed)`` from the first run's dataset. The result is
    ``fd.metrics.udr``'s, plus the runs, the ranking (best first) and the images used."""
    from factordiff.data import load_dataset
    from factordiff.pipeline import load_pretrained

    if len(runs) < 2:
        raise FactordiffError(f"UDR compares runs: give at least 2, got {len(runs)}")
    if n_images < 2:
        raise FactordiffError(f"--images must be at least 2, got {n_images}")
    models = [load_pretrained(run, device=device) for run in runs]
    _check_same_data(runs, models)
    dataset = load_dataset(models[0].config.data)
    n = min(n_images, len(dataset))
    rows = np.sort(np.random.RandomState(seed).choice(len(dataset), n, replace=False))
    images = dataset.images_at(rows)
    codes, kl, modes = [], [], []
    for model in tqdm(models, desc="encoding", disable=not progress):
        represent, mode = reduce_representation(
            model.represent, images, model.config.eval.representation
        )
        codes.append(np.asarray(represent(images)))
        modes.append(mode)
        unit_kl = getattr(model, "unit_kl", None)
        kl.append(unit_kl(images) if unit_kl is not None and mode == "scalars" else None)
    with_kl = all(k is not None for k in kl)
    result = udr(codes, kl=kl if with_kl else None, correlation=correlation)
    order = np.argsort(result["scores"])[::-1]
    return {
        "runs": [str(r) for r in runs],
        **result,
        "ranking": [str(runs[i]) for i in order],
        "represents": [
            m.representation_of + (f" ({mode})" if mode != "scalars" else "")
            for m, mode in zip(models, modes, strict=True)
        ],  # fmt: skip
        "dataset": {
            "name": models[0].config.data.name,
            "root": models[0].config.data.root,
            "images": int(n),
            "of": len(dataset),
            "seed": seed,
        },  # fmt: skip
    }


def ranking_rows(result: dict) -> list[tuple[int, str, float, str]]:
    """``udr_of_runs``'s ranking as (rank, run, UDR, "active / units") rows, best first: what
    ``factordiff udr`` prints and the report shows."""
    rows = []
    for rank, run in enumerate(result["ranking"], 1):
        i = result["runs"].index(run)
        active = result["active"][i]
        rows.append((rank, run, result["scores"][i], f"{sum(active)} / {len(active)}"))
    return rows


def _check_same_data(runs: list, models: list) -> None:
    """UDR compares codes of the same images: every run must have been trained on the same
    dataset at the same size (the images are drawn once, from the first run's data)."""

    def data_of(model) -> tuple:
        d = model.config.data
        return d.name, str(d.root) if d.root else None, d.image_size

    first = data_of(models[0])
    for run, model in zip(runs[1:], models[1:], strict=True):
        if data_of(model) != first:
            raise FactordiffError(
                f"{run} was trained on data {data_of(model)} (name, root, image size) but "
                f"{runs[0]} on {first}: UDR compares runs on the same images"
            )

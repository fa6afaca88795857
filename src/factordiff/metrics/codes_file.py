"""Scoring saved codes: ``factordiff metrics codes.npz``, for any model, not only ours.

The ``.npz`` holds ``codes`` (n, n_codes) float and ``factors`` (n, n_factors) int, one row
per image; optionally ``codes_test`` / ``factors_test`` (else the first ``train_fraction``
of the rows train and the rest test), ``attributes`` (n, n_attributes) binary for TAD,
and ``factor_names``.

FactorVAE and beta-VAE need batches with one factor held fixed. They run on all rows
(train and test together) when the file covers the factor grid -- then the protocol's
draws index the saved codes exactly as ``factordiff eval`` indexes a dataset's images, and
the scores equal the image path's for the same codes -- or holds enough labelled rows
for every factor value (batches drawn among rows sharing the value;
:class:`~factordiff.metrics.sampling.LabelledSampler`). Each result's ``sampling`` says
which.
"""

from __future__ import annotations

import math
import time
import zipfile
from pathlib import Path

import numpy as np

from factordiff.data.base import GridDataset
from factordiff.errors import FactordiffError
from factordiff.metric_registry import METRICS, resolve, score_arrays
from factordiff.metrics.utils import MetricInputError, check_codes, check_factors

#: every registered metric that scores codes (FID scores images)
CODES_METRICS = tuple(n for n, m in METRICS.items() if m.inputs != "generation")


def load_codes(path: Path, train_fraction: float = 2 / 3) -> dict:
    """Read and validate a codes file; every problem names the file and the key."""
    if not path.is_file():
        raise FactordiffError(f"{path}: no such file (expected an .npz with codes and factors)")
    if not zipfile.is_zipfile(path):
        raise FactordiffError(f"{path}: not an .npz (zip) file; write it with numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise FactordiffError(f"{path}: not a readable .npz file ({exc})") from None
    if "codes" not in arrays:
        raise FactordiffError(f"{path}: missing key 'codes'; found {sorted(arrays)}")
    try:
        codes = check_codes(arrays["codes"], f"{path}: 'codes'")
        out: dict = {"codes": codes, "codes_all": codes, "path": path}
        if "factors" in arrays:
            out["factors"] = check_factors(arrays["factors"], len(codes), f"{path}: 'factors'")
            out["rows"] = (codes, out["factors"])  # every labelled row, for the sampling metrics
        if "attributes" in arrays:
            out["attributes"] = np.asarray(arrays["attributes"])
        if "codes_test" in arrays:
            out["codes_test"] = check_codes(arrays["codes_test"], f"{path}: 'codes_test'")
            if "factors_test" not in arrays:
                raise MetricInputError(f"{path}: 'codes_test' given without 'factors_test'")
            out["factors_test"] = check_factors(
                arrays["factors_test"], len(out["codes_test"]), f"{path}: 'factors_test'"
            )
            if "factors" in out:
                if out["codes_test"].shape[1] != codes.shape[1]:
                    raise MetricInputError(
                        f"{path}: 'codes_test' has {out['codes_test'].shape[1]} codes, "
                        f"'codes' {codes.shape[1]}"
                    )
                if out["factors_test"].shape[1] != out["factors"].shape[1]:
                    raise MetricInputError(
                        f"{path}: 'factors_test' has {out['factors_test'].shape[1]} factors, "
                        f"'factors' {out['factors'].shape[1]}"
                    )
                out["rows"] = (
                    np.concatenate([codes, out["codes_test"]]),
                    np.concatenate([out["factors"], out["factors_test"]]),
                )
        elif "factors" in out:
            n_train = int(np.ceil(len(codes) * train_fraction))
            if not 2 <= n_train <= len(codes) - 2:
                raise MetricInputError(f"{path}: too few rows ({len(codes)}) to split train/test")
            out["codes_test"], out["factors_test"] = codes[n_train:], out["factors"][n_train:]
            out["codes"], out["factors"] = codes[:n_train], out["factors"][:n_train]
    except MetricInputError as exc:
        raise FactordiffError(str(exc)) from None
    if "factor_names" in arrays:
        out["factor_names"] = [str(x) for x in arrays["factor_names"]]
    return out


class CodesGrid(GridDataset):
    """The factor grid of a codes file (class indices = each factor's sorted values)."""

    has_ground_truth = True

    def __init__(self, name: str, factor_names: tuple[str, ...], sizes: tuple[int, ...]):
        self.name, self.factor_names, self.factor_sizes = name, factor_names, sizes
        self.image_shape = (0, 0, 0)

    def _read(self, indices: np.ndarray) -> np.ndarray:
        raise FactordiffError(f"{self.name}: a codes file has codes, not images")


def codes_sampler(data: dict, batch_size: int, seed: int = 0) -> tuple[object, str]:
    """The sampler FactorVAE/beta-VAE draw from for a loaded codes file, and how, in words.

    Full grid (every combination of the factors' values exactly once): a prefilled
    ``CodeCache`` over ``CodesGrid``, i.e. the protocol's own draws. Otherwise labelled
    sampling, which needs ``batch_size`` rows for every factor value; the error names
    the value that has too few.
    """
    from factordiff.metrics.code_cache import CodeCache
    from factordiff.metrics.sampling import GridSampler, LabelledSampler

    path = data.get("path", Path("codes"))
    if "rows" not in data:
        raise FactordiffError(f"{path}: FactorVAE/beta-VAE need 'factors' in the codes file")
    codes, factors = data["rows"]
    names = tuple(data.get("factor_names") or [f"factor {i}" for i in range(factors.shape[1])])
    if len(names) != factors.shape[1]:
        names = tuple(f"factor {i}" for i in range(factors.shape[1]))
    dense = np.stack(
        [np.unique(factors[:, i], return_inverse=True)[1].reshape(-1) for i in range(len(names))],
        axis=1,
    )
    sizes = tuple(int(dense[:, i].max()) + 1 for i in range(len(names)))
    n_grid = math.prod(sizes)
    n_distinct = len(np.unique(dense, axis=0))
    if n_distinct == len(codes) == n_grid:
        index = np.ravel_multi_index(tuple(dense.T), sizes)
        grid = CodesGrid(Path(path).name, names, sizes)
        cache = CodeCache(lambda images: images, grid)
        cache.table = np.empty_like(codes)
        cache.table[index] = codes
        cache.known[:] = True
        how = (
            f"full factor grid: {len(codes)} rows, one per combination of {len(sizes)} "
            f"factors {sizes}; the protocol's draws (RandomState({seed}), batch {batch_size}) "
            "index the saved codes as `factordiff eval` indexes images"
        )
        return GridSampler(cache, grid), how
    try:
        sampler = LabelledSampler(codes, factors, batch_size, list(names), str(path))
    except MetricInputError as exc:
        raise FactordiffError(
            f"{exc}. The file has {n_distinct} distinct factor combinations of the "
            f"{n_grid} in the grid, in {len(codes)} rows."
        ) from None
    fewest = min(int(c.min()) for c in sampler.counts)
    how = (
        f"labelled samples: {len(codes)} rows, {n_distinct} of the {n_grid} factor "
        f"combinations; each fixed-factor batch: {batch_size} rows drawn with replacement "
        f"among the rows sharing the fixed value (fewest rows for a value: {fewest}); "
        f"RandomState({seed}). Not the grid protocol: expect sampling noise against it"
    )
    return sampler, how


def score_codes(
    data: dict, metrics: list[str], dci_backend: str = "lightgbm", seed: int = 0
) -> dict:
    """Run the chosen metrics on loaded codes; each result records its seconds (and, for
    FactorVAE/beta-VAE, ``sampling``: how the batches were drawn)."""
    metrics = resolve(metrics)
    of_images = [m for m in metrics if m not in CODES_METRICS]
    if of_images:
        raise FactordiffError(
            f"metric(s) {of_images} cannot run on saved codes (they score generated images); "
            f"choose from {', '.join(CODES_METRICS)}"
        )
    results: dict = {"n_train": len(data["codes"]), "n_test": len(data.get("codes_test", []))}
    for name in metrics:
        if name != "tad" and "factors" not in data:
            raise FactordiffError(f"{name} needs 'factors' in the codes file")
        start = time.perf_counter()
        metric = METRICS[name]
        if metric.inputs == "batches":
            size = metric.protocol
            sampler, how = codes_sampler(data, size["batch_size"], seed)
            res = {**metric.load()(None, None, seed, sampler=sampler, **size), "sampling": how}
        elif metric.inputs == "attributes":
            if "attributes" not in data:
                raise FactordiffError(f"{name} needs 'attributes' in the codes file")
            res = metric.load()(data["codes_all"], data["attributes"])
        else:
            res = score_arrays(
                name, data["codes"], data["factors"], data.get("codes_test"),
                data.get("factors_test"), dci_backend=dci_backend,
            )  # fmt: skip
        res["seconds"] = round(time.perf_counter() - start, 3)
        results[name] = res
    return results

"""Run a set of metrics with the paper protocol's defaults (disentanglement_lib study configs).

Each metric starts from its own ``RandomState(seed)``, as every evaluation in
disentanglement_lib does, so each number equals what the reference computes for the
same representation. DCI, MIG, SAP, Modularity and InfoMEC draw the same points (train first,
then test, factors in batches of 16), so those codes are computed once and shared.

With a deterministic representation every metric draws its codes from one
:class:`~factordiff.metrics.code_cache.CodeCache`: each distinct image of the dataset is
represented at most once (the quickstart grid's 2,592 instead of the ~1 million images
the FactorVAE protocol samples), and the draws, hence the numbers, stay those of the
sampling path.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from datetime import datetime, timezone

import numpy as np
from tqdm.auto import tqdm

from factordiff._version import __version__
from factordiff.data.base import FactorDataset
from factordiff.metric_registry import METRICS, resolve, score_arrays
from factordiff.metrics.utils import (
    MetricInputError,
    Represent,
    represent_factors,
    sample_codes,
)

#: The published protocol's sample counts and each metric's headline numbers, from the
#: registry (the one place metrics are declared).
PROTOCOL: dict[str, dict] = {name: dict(m.protocol) for name, m in METRICS.items()}
HEADLINE: dict[str, tuple[str, ...]] = {name: m.headline for name, m in METRICS.items()}


def _jsonable(value: object) -> object:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def results_to_json(results: dict) -> str:
    """Metric results (numpy arrays and scalars included) as indented JSON."""
    import json

    return json.dumps(results, indent=2, default=_jsonable)


def headline(results: dict) -> dict[str, float]:
    """Flat ``{"metric/score": value}`` of the headline numbers in ``evaluate``'s result."""
    return {
        f"{name}/{key}": float(results[name][key])
        for name in HEADLINE
        if name in results
        for key in HEADLINE[name]
    }


#: Images used to fit the per-unit PCA of vector representations (own RandomState(seed)).
PCA_FIT_IMAGES = 10000


def protocol_sizes(scale: float = 1.0) -> dict[str, dict]:
    """The protocol with every sample count multiplied by ``scale`` (bins/batches kept)."""
    sized = {}
    for name, params in PROTOCOL.items():
        sized[name] = {
            k: max(2, int(v * scale)) if k.startswith("num_") and k != "num_bins" else v
            for k, v in params.items()
        }
    return sized


def evaluate(
    represent: Represent,
    dataset: FactorDataset,
    metrics: Iterable[str] = ("factorvae", "dci", "mig", "sap", "modularity", "infomec"),
    seed: int = 0,
    *,
    representation: str = "auto",
    dci_backend: str = "lightgbm",
    scale: float = 1.0,
    progress: bool = True,
    cache: str | bool = "auto",
) -> dict:
    """Scores of ``represent`` (uint8 images -> codes) on ``dataset``.

    ``scale`` multiplies every sample count (e.g. 0.1 for a quick look; 1.0 is the
    protocol and the only setting comparable with published tables). The result holds
    one dict per metric plus ``"protocol"`` (sample counts, seed, representation mode,
    and ``codes_cache``: whether codes were cached and how many images were encoded).

    ``cache``: with a deterministic representation (``"auto"`` checks by representing a
    few images twice), each distinct image is represented once and every protocol draw
    looks its code up (:class:`~factordiff.metrics.code_cache.CodeCache`); the draws and
    therefore the scores are those of the sampling path. ``"off"`` represents every
    sampled image (needed for a stochastic representation; ``"auto"`` falls back to it).
    """
    from factordiff.metrics.code_cache import CodeCache, cache_plan
    from factordiff.metrics.representation import PROBE_IMAGES, reduce_representation

    if not (isinstance(scale, int | float) and math.isfinite(scale) and scale > 0):
        raise MetricInputError(
            f"scale must be a positive share of the protocol's sample counts (1.0 = the "
            f"published counts, 0.1 = a tenth); got {scale}"
        )
    names = resolve(metrics)
    not_scored = {n: "scores generated images against real ones, not the representation: "
                  "fd.metrics.fid(real, fake, weights=...)"
                  for n in names if METRICS[n].inputs == "generation"}  # fmt: skip
    names = [n for n in names if n not in not_scored]
    if not getattr(dataset, "has_ground_truth", True):
        needs_factors = [m for m in names if m != "tad"]
        if needs_factors:
            raise MetricInputError(
                f"{dataset.name} has no ground-truth factors (only an image index): "
                f"{', '.join(needs_factors)} would score meaningless numbers; use tad"
            )
    sizes = protocol_sizes(scale)
    fit_rs = np.random.RandomState(seed)
    n_fit = min(len(dataset), max(256, int(PCA_FIT_IMAGES * min(scale, 1.0))))
    fit_images = dataset.images_at(np.sort(fit_rs.choice(len(dataset), n_fit, replace=False)))
    represent, mode = reduce_representation(represent, fit_images, representation)
    use_cache, cache_reason = cache_plan(represent, dataset, fit_images[:PROBE_IMAGES], cache)
    if use_cache:
        represent = CodeCache(represent, dataset)

    results: dict = {
        "protocol": {
            "seed": seed,
            "representation": mode,
            "scale": scale,
            "dci_backend": dci_backend,
            "sizes": {m: sizes[m] for m in names},
            "scored_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "factordiff_version": __version__,
            **({"not_scored": not_scored} if not_scored else {}),
        }
    }
    array_names = [m for m in names if METRICS[m].inputs == "arrays"]
    shared = None
    if array_names:  # one draw serves all array metrics: same seed, same points
        rs = np.random.RandomState(seed)
        n_train = max(sizes[m]["num_train"] for m in array_names)
        n_test = max(sizes[m].get("num_test", 0) for m in array_names)
        shared = (sample_codes(represent, dataset, n_train, rs), None)
        if n_test:
            shared = (shared[0], sample_codes(represent, dataset, n_test, rs))
    for name in tqdm(names, desc="metrics", disable=not progress):
        start = time.perf_counter()
        size = sizes[name]
        kind = METRICS[name].inputs
        if kind == "arrays":
            (c_tr, f_tr), test = shared  # type: ignore[misc]
            c_tr, f_tr = c_tr[: size["num_train"]], f_tr[: size["num_train"]]
            c_te = f_te = None
            if "num_test" in size:
                c_te, f_te = test[0][: size["num_test"]], test[1][: size["num_test"]]
            res = score_arrays(
                name, c_tr, f_tr, c_te, f_te,
                num_bins=size.get("num_bins", 20), dci_backend=dci_backend, seed=seed,
            )  # fmt: skip
        elif kind == "batches":
            res = METRICS[name].load()(represent, dataset, seed, **size)
        else:
            res = tad_on_dataset(represent, dataset, seed, size["num_samples"])
        res["seconds"] = round(time.perf_counter() - start, 3)
        results[name] = res
    results["protocol"]["codes_cache"] = {
        "used": use_cache,
        "reason": cache_reason,
        **(represent.summary() if isinstance(represent, CodeCache) else {}),
    }
    return results


def tad_on_dataset(
    represent: Represent, dataset: FactorDataset, seed: int, num_samples: int
) -> dict:
    """TAD on ``num_samples`` images drawn without replacement (``RandomState(seed)``)."""
    from factordiff.metrics import tad

    attributes = getattr(dataset, "attributes", None)
    if attributes is None:
        raise MetricInputError(f"TAD needs binary attributes; {dataset.name} has none")
    rs = np.random.RandomState(seed)
    idx = np.sort(rs.choice(len(dataset), min(num_samples, len(dataset)), replace=False))
    codes = represent_factors(represent, dataset, dataset.index_to_factors(idx))
    names = list(getattr(dataset, "attribute_names", ()) or []) or None
    return tad(codes, attributes[idx], attribute_names=names)

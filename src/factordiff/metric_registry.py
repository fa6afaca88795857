"""The metrics, declared once. ``evaluate`` (``factordiff eval``), the codes-file scorer
(``factordiff metrics``), the config's ``eval.metrics`` check, reports and the CLI help all
read this table, and every name a user types goes through ``resolve`` (one normalisation,
one "did you mean"). A metric is one module (its function, the definition in its docstring)
plus one row of ``METRICS``.

It lives beside, not inside, ``factordiff.metrics`` and imports no metric: rows name their
function's module, loaded on first use, so the CLI and config validation read the names
without loading scikit-learn and LightGBM.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from factordiff.errors import MetricInputError


@dataclass(frozen=True)
class Metric:
    """One metric: how it is fed, the published protocol's sample counts, the numbers a
    paper table reports (keys of its result dict)."""

    name: str
    #: arrays: codes + factors (train, optional test), drawn once and shared by every array
    #: metric; batches: fixed-factor batches (a representation function and a dataset, or a
    #: labelled sampler); attributes: codes + binary attributes (TAD); generation: real and
    #: generated images (FID; not a score of the representation, so ``evaluate`` skips it)
    inputs: str
    module: str  # factordiff.metrics.<module> defines the function ``name_of_function``
    function: str
    protocol: dict[str, int] = field(default_factory=dict)
    headline: tuple[str, ...] = ()
    #: arrays metrics: whether the function takes test codes after the training ones, and
    #: which of ``evaluate``'s options it takes by keyword (num_bins, backend, seed)
    takes_test: bool = False
    options: tuple[str, ...] = ()

    def load(self) -> Callable:
        return getattr(importlib.import_module(f"factordiff.metrics.{self.module}"), self.function)


#: disentanglement_lib unsupervised_study_v1's metric configs (InfoMEC: as the DyGA
#: evaluation runs it, 10000 points drawn like DCI's)
METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("factorvae", "batches", "factor_vae", "factor_vae",
               {"batch_size": 64, "num_train": 10000, "num_eval": 5000,
                "num_variance_estimate": 10000, "prune_threshold": 0.05}, ("eval_accuracy",)),
        Metric("betavae", "batches", "beta_vae", "beta_vae",
               {"batch_size": 64, "num_train": 10000, "num_eval": 5000}, ("eval_accuracy",)),
        Metric("dci", "arrays", "dci", "dci", {"num_train": 10000, "num_test": 5000},
               ("disentanglement", "completeness", "informativeness_test"), True, ("backend",)),
        Metric("mig", "arrays", "mig", "mig", {"num_train": 10000, "num_bins": 20}, ("mig",),
               False, ("num_bins",)),
        Metric("sap", "arrays", "sap", "sap", {"num_train": 10000, "num_test": 5000}, ("sap",),
               True),
        Metric("modularity", "arrays", "modularity", "modularity",
               {"num_train": 10000, "num_test": 5000, "num_bins": 20},
               ("modularity", "explicitness"), True, ("num_bins",)),
        Metric("tad", "attributes", "tad", "tad", {"num_samples": 10000}, ("tad", "n_captured")),
        Metric("infomec", "arrays", "infomec", "infomec", {"num_train": 10000},
               ("infom", "infoe", "infoc"), False, ("seed",)),
        Metric("fid", "generation", "fid", "fid", {}, ("fid",)),
    )
}  # fmt: skip


def normalise(name: str) -> str:
    """The one spelling rule: case, ``-`` and ``_`` do not matter (``Factor-VAE``)."""
    return name.strip().lower().replace("-", "").replace("_", "")


def resolve(names: Iterable[str], allowed: Iterable[str] | None = None) -> list[str]:
    """Registered names of ``names`` (normalised); an unknown one gets "did you mean"."""
    allowed = list(METRICS if allowed is None else allowed)
    out = [normalise(n) for n in names]
    unknown = [n for n in out if n not in allowed]
    if unknown:
        hints = []
        for n in unknown:
            close = difflib.get_close_matches(n, allowed, n=1, cutoff=0.6)
            hints.append(f"{n!r} (did you mean {close[0]!r}?)" if close else repr(n))
        raise MetricInputError(
            f"unknown metric(s) {', '.join(hints)}; choose from {', '.join(allowed)}"
        )
    return out


def score_arrays(
    name: str,
    codes_train,
    factors_train,
    codes_test=None,
    factors_test=None,
    *,
    num_bins: int = 20,
    dci_backend: str = "lightgbm",
    seed: int = 0,
) -> dict:
    """One array metric on given codes, called as its row says: the test points when it
    takes them (MIG and InfoMEC use only the training points; Modularity's explicitness the
    test points when given), and the options it takes (DCI's tree backend, the histogram
    bins, InfoMEC's estimator noise from ``seed``)."""
    metric = METRICS.get(name)
    if metric is None or metric.inputs != "arrays":
        arrays = [m.name for m in METRICS.values() if m.inputs == "arrays"]
        raise MetricInputError(f"{name!r} is not an array metric; choose from {', '.join(arrays)}")
    given = {"num_bins": num_bins, "backend": dci_backend, "seed": seed}
    test = (codes_test, factors_test) if metric.takes_test else ()
    options = {key: given[key] for key in metric.options}
    return metric.load()(codes_train, factors_train, *test, **options)

"""Downstream task: how well, and from how few examples, the units predict each factor.

Definition (disentanglement_lib's ``downstream_task``, used by the DyGA paper with gradient
boosted trees): for each training size n (10000, 1000, 100), draw n training points and
``num_test`` test points (in that order, from one ``RandomState(seed)``, factors sampled in
batches of 16 as everywhere in the protocol), fit one classifier per factor on all codes,
and report the mean over factors of the test accuracy. Sample efficiency is
acc(100) / acc(10000) and acc(1000) / acc(10000): near 1 when few labels suffice.

The classifier is disentanglement_lib's ``make_predictor_fn`` choice for the DyGA study,
sklearn's ``GradientBoostingClassifier()`` (``backend="sklearn"``), or LightGBM grown the
same way (``backend="lightgbm"``, the default, minutes faster; see ``metrics.gbt``).
"""

from __future__ import annotations

import numpy as np

from factordiff.data.base import FactorDataset
from factordiff.metrics.gbt import Backend, fit_gbt_per_factor
from factordiff.metrics.utils import MetricInputError, Represent, sample_codes

TRAIN_SIZES = (10000, 1000, 100)


def downstream(
    represent: Represent,
    dataset: FactorDataset,
    seed: int = 0,
    *,
    train_sizes: tuple[int, ...] = TRAIN_SIZES,
    num_test: int = 5000,
    backend: Backend = "lightgbm",
    n_jobs: int | None = None,
) -> dict:
    """Mean test accuracy per training size and the sample efficiencies.

    Returns ``{"accuracy": {n: mean test accuracy}, "accuracy_per_factor": {n: [...]},
    "train_accuracy": {n: ...}, "sample_efficiency": {"100/10000": ..., ...}, settings}``.
    """
    if not getattr(dataset, "has_ground_truth", True):
        raise MetricInputError(f"{dataset.name} has no ground-truth factors to predict")
    if not train_sizes or min(train_sizes) < 2 or num_test < 1:
        raise MetricInputError(
            f"train_sizes must be >= 2 and num_test >= 1; got {train_sizes}, {num_test}"
        )
    rs = np.random.RandomState(seed)
    accuracy, per_factor, train_accuracy = {}, {}, {}
    for n in train_sizes:
        codes_train, factors_train = sample_codes(represent, dataset, n, rs)
        codes_test, factors_test = sample_codes(represent, dataset, num_test, rs)
        _, acc_train, acc_test = fit_gbt_per_factor(
            codes_train, factors_train, codes_test, factors_test, backend, n_jobs, seed
        )
        accuracy[n] = float(np.mean(acc_test))
        train_accuracy[n] = float(np.mean(acc_train))
        per_factor[n] = acc_test.tolist()
    largest = max(train_sizes)
    efficiency = {
        f"{n}/{largest}": accuracy[n] / accuracy[largest]
        for n in sorted(train_sizes)
        if n != largest and accuracy[largest] > 0
    }
    return {
        "accuracy": accuracy,
        "accuracy_per_factor": per_factor,
        "train_accuracy": train_accuracy,
        "sample_efficiency": efficiency,
        "factor_names": list(dataset.factor_names),
        "settings": {
            "train_sizes": list(train_sizes),
            "num_test": num_test,
            "backend": backend,
            "seed": seed,
        },  # fmt: skip
    }


def downsampled_pixels(size: int = 8):
    """A baseline representation: the image box-filtered to ``size`` x ``size`` pixels,
    flattened (what trees can do without any learned units)."""

    def represent(images: np.ndarray) -> np.ndarray:
        x = np.asarray(images, dtype=np.float32) / 255.0
        n, h, w, c = x.shape
        if h % size or w % size:
            raise MetricInputError(f"image side {h}x{w} is not a multiple of {size}")
        x = x.reshape(n, size, h // size, size, w // size, c).mean(axis=(2, 4))
        return x.reshape(n, -1)

    return represent


def downstream_results(
    model, dataset: FactorDataset, baselines: dict, seed: int = 0,
    train_sizes: tuple[int, ...] = TRAIN_SIZES, num_test: int = 5000,
    backend: Backend = "lightgbm",
) -> dict[str, dict]:  # fmt: skip
    """:func:`downstream` for a trained model (its representation as the metrics score it:
    per-unit PCA for vector units) and for each named baseline representation."""
    from factordiff.metrics.evaluate import PCA_FIT_IMAGES
    from factordiff.metrics.representation import reduce_representation

    rs = np.random.RandomState(seed)
    fit = dataset.images_at(np.sort(rs.choice(len(dataset), min(len(dataset), PCA_FIT_IMAGES),
                                              replace=False)))  # fmt: skip
    represent, mode = reduce_representation(model.represent, fit, model.config.eval.representation)
    out = {f"model ({mode})": downstream(represent, dataset, seed, train_sizes=train_sizes,
                                         num_test=num_test, backend=backend)}  # fmt: skip
    for name, fn in baselines.items():
        out[name] = downstream(fn, dataset, seed, train_sizes=train_sizes, num_test=num_test,
                               backend=backend)  # fmt: skip
    return out

"""Shared pieces of the metrics: input checks, histogram discretisation, mutual information,
and drawing (codes, factors) samples exactly as disentanglement_lib does.

Conventions: ``codes`` are float arrays (n, n_codes), ``factors`` int arrays (n, n_factors)
of class indices (one row per point; disentanglement_lib stores the transpose).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np

from factordiff.data.base import FactorDataset
from factordiff.errors import MetricInputError

Represent = Callable[[np.ndarray], np.ndarray]


def check_codes(codes: np.ndarray, name: str = "codes") -> np.ndarray:
    """float64 (n, n_codes), finite; raise a clear error otherwise."""
    arr = np.asarray(codes)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise MetricInputError(f"{name} must be a 2-D array (n, n_codes), got shape {arr.shape}")
    if arr.shape[0] < 2:
        raise MetricInputError(f"{name} needs at least 2 points, got {arr.shape[0]}")
    if not np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
        raise MetricInputError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise MetricInputError(
            f"{name} contains NaN or inf (first at row {bad[0]}, column {bad[1]})"
        )
    return arr


def check_factors(factors: np.ndarray, n: int, name: str = "factors") -> np.ndarray:
    """int64 (n, n_factors) class indices; raise a clear error otherwise."""
    arr = np.asarray(factors)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise MetricInputError(f"{name} must be a 2-D array (n, n_factors), got {arr.shape}")
    if arr.shape[0] != n:
        raise MetricInputError(
            f"{name} has {arr.shape[0]} rows but the codes have {n}: one row per point in both"
        )
    integral = np.issubdtype(arr.dtype, np.integer) or (
        np.issubdtype(arr.dtype, np.number) and np.isfinite(arr).all() and np.all(arr % 1 == 0)
    )
    if not integral:
        raise MetricInputError(f"{name} must hold integer class indices")
    return arr.astype(np.int64)


def check_pair(codes: np.ndarray, factors: np.ndarray, suffix: str = "") -> tuple:
    codes = check_codes(codes, "codes" + suffix)
    return codes, check_factors(factors, codes.shape[0], "factors" + suffix)


def check_train_test(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Check a train/test split: each pair valid, same codes and factors in both."""
    codes_train, factors_train = check_pair(codes_train, factors_train, "_train")
    codes_test, factors_test = check_pair(codes_test, factors_test, "_test")
    if codes_train.shape[1] != codes_test.shape[1]:
        raise MetricInputError(
            f"codes_train has {codes_train.shape[1]} codes but codes_test has {codes_test.shape[1]}"
        )
    if factors_train.shape[1] != factors_test.shape[1]:
        raise MetricInputError(
            f"factors_train has {factors_train.shape[1]} factors but factors_test has "
            f"{factors_test.shape[1]}"
        )
    return codes_train, factors_train, codes_test, factors_test


def histogram_discretize(codes: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """Per code, ``num_bins`` equal-width bins between its min and max (disentanglement_lib).

    Bin ids are ``np.digitize(x, edges[:-1])``: 1..num_bins, the maximum falling in the
    last bin. A constant code maps to a single bin.
    """
    out = np.zeros(codes.shape, dtype=np.int64)
    for i in range(codes.shape[1]):
        edges = np.histogram(codes[:, i], num_bins)[1]
        out[:, i] = np.digitize(codes[:, i], edges[:-1])
    return out


def _dense_labels(x: np.ndarray) -> tuple[np.ndarray, int]:
    values, inverse = np.unique(x, return_inverse=True)
    return inverse.reshape(-1), len(values)


def mutual_info(a: np.ndarray, b: np.ndarray) -> float:
    """Mutual information (nats) of two discrete label vectors.

    The value of ``sklearn.metrics.mutual_info_score`` (what disentanglement_lib calls),
    including its conventions: exactly 0 when either variable is constant, per-cell terms
    below machine epsilon snapped to 0, the sum clipped at 0. Computed from one
    ``bincount`` contingency table.
    """
    la, ka = _dense_labels(a)
    lb, kb = _dense_labels(b)
    if ka == 1 or kb == 1:
        return 0.0
    joint = np.bincount(la * kb + lb, minlength=ka * kb).reshape(ka, kb)
    rows, cols = np.nonzero(joint)
    counts = joint[rows, cols].astype(np.float64)
    total = counts.sum()
    pa = joint.sum(axis=1).astype(np.float64)
    pb = joint.sum(axis=0).astype(np.float64)
    p_joint = counts / total
    log_outer = -np.log(pa[rows] * pb[cols]) + np.log(pa.sum()) + np.log(pb.sum())
    terms = p_joint * (np.log(counts) - np.log(total)) + p_joint * log_outer
    terms = np.where(np.abs(terms) < np.finfo(terms.dtype).eps, 0.0, terms)
    return float(np.clip(terms.sum(), 0.0, None))


def mutual_info_matrix(discrete_codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """(n_codes, n_factors) mutual information between discretised codes and factors."""
    m = np.zeros((discrete_codes.shape[1], factors.shape[1]))
    for i in range(discrete_codes.shape[1]):
        for j in range(factors.shape[1]):
            m[i, j] = mutual_info(discrete_codes[:, i], factors[:, j])
    return m


def entropy(factors: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each factor column, as ``mutual_info(y, y)``."""
    return np.array([mutual_info(factors[:, j], factors[:, j]) for j in range(factors.shape[1])])


def sample_codes(
    represent: Represent,
    dataset: FactorDataset,
    num_points: int,
    random_state: np.random.RandomState,
    batch_size: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``num_points`` (codes, factors) as disentanglement_lib's
    ``generate_batch_factor_code`` does: factors sampled in batches of ``batch_size``
    (one ``randint`` per factor per batch), so a ``RandomState(0)`` gives the reference's
    points. Images are rendered and represented in larger chunks; that consumes no
    randomness, so the points do not change.
    """
    factor_batches = []
    done = 0
    while done < num_points:
        n = min(num_points - done, batch_size)
        factor_batches.append(dataset.sample_factors(n, random_state))
        done += n
    factors = np.concatenate(factor_batches) if factor_batches else np.zeros((0, 0), np.int64)
    return represent_factors(represent, dataset, factors), factors


@runtime_checkable
class FactorLookup(Protocol):
    """A representation that also answers by factors, without the images: the metrics ask
    it instead of rendering and encoding (``code_cache.CodeCache``)."""

    dataset: FactorDataset

    def codes(self, factors: np.ndarray) -> np.ndarray: ...


def represent_factors(
    represent: Represent, dataset: FactorDataset, factors: np.ndarray, chunk: int = 1024
) -> np.ndarray:
    """Codes (n, n_codes) of the images at ``factors``, computed ``chunk`` images at a time.

    When ``represent`` looks codes up by factors for ``dataset`` (a ``FactorLookup``, such
    as :class:`~factordiff.metrics.code_cache.CodeCache`), the codes come from there (each
    distinct image represented once).
    """
    if isinstance(represent, FactorLookup) and represent.dataset is dataset:
        return represent.codes(factors)
    out = []
    for start in range(0, len(factors), chunk):
        images = dataset.images(factors[start : start + chunk])
        codes = np.asarray(represent(images))
        if codes.ndim != 2 or codes.shape[0] != len(images):
            raise MetricInputError(
                f"the representation function must map {len(images)} images to a 2-D array "
                f"({len(images)}, n_codes); got shape {codes.shape}"
            )
        out.append(codes)
    return check_codes(np.concatenate(out), "representation")

"""DCI: Disentanglement, Completeness, Informativeness (Eastwood & Williams, ICLR 2018),
as disentanglement_lib computes it (``evaluation/metrics/dci.py``).

Definition, with ``n_codes`` codes and ``n_factors`` factors:

- For each factor ``j``, a gradient-boosted-trees classifier predicts the factor's class
  from *all* codes (``sklearn.ensemble.GradientBoostingClassifier()`` with default settings
  in the reference; see :mod:`factordiff.metrics.gbt` for the fast backend). Its
  impurity-based importances (normalised to sum 1) form column ``j`` of the importance
  matrix ``R`` (n_codes, n_factors), ``R[i, j] = |feature_importances_[i]|``.
- Informativeness (train / test) = mean over factors of the classifier's **accuracy** on
  the training / test points (disentanglement_lib names these ``train_err``/``test_err``,
  but they are accuracies).
- Disentanglement = ``sum_i rho_i (1 - H_{n_factors}(P_i))``: ``P_i`` is row ``i`` of ``R``
  plus 1e-11, normalised to sum 1 (``scipy.stats.entropy(R.T + 1e-11, base=n_factors)``),
  and ``rho_i = sum_j R[i, j] / sum R`` the code's share of the total importance.
- Completeness = ``sum_j rho_j (1 - H_{n_codes}(P_j))`` over the columns, with
  ``rho_j = sum_i R[i, j] / sum R``. The reference weights by column share; since each
  column of ``R`` sums to 1 this is the mean over factors unless a column is all zero.
- When ``R`` is all zero the shares are uniform (the 1e-11 then gives every entropy 1 and
  the scores 0), exactly as the reference does.

One deliberate difference: with a single factor (single code) the reference's entropy base
is 1, which gives NaN; here the per-code (per-factor) term is then 1 (a distribution over
one item is fully concentrated).

The reported "DCI" of the papers is the disentanglement score. Protocol of the papers:
10000 training / 5000 test points drawn with ``RandomState(0)`` (see
:func:`factordiff.metrics.utils.sample_codes`).
"""

from __future__ import annotations

import numpy as np
import scipy.stats

from factordiff.metrics.gbt import BACKENDS, Backend, fit_gbt_per_factor
from factordiff.metrics.utils import MetricInputError, check_train_test

# The reference adds this to every importance before taking entropies.
ENTROPY_EPS = 1e-11


def _check_importance(importance_matrix: np.ndarray) -> np.ndarray:
    r = np.asarray(importance_matrix, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] < 1 or r.shape[1] < 1:
        raise MetricInputError(
            f"importance_matrix must be a non-empty 2-D array (n_codes, n_factors), got {r.shape}"
        )
    if not np.isfinite(r).all() or (r < 0).any():
        raise MetricInputError("importance_matrix must hold finite, non-negative importances")
    return r


def _one_minus_entropy(r: np.ndarray, axis: int) -> np.ndarray:
    """``1 - H(p)`` of each slice along ``axis``, in base = its length, after the reference's
    ``+1e-11`` (a length-1 slice scores 1 instead of the reference's NaN)."""
    size = r.shape[axis]
    if size == 1:
        return np.ones(r.shape[1 - axis])
    return 1.0 - scipy.stats.entropy(r + ENTROPY_EPS, base=size, axis=axis)


def _shares(r: np.ndarray, axis: int) -> np.ndarray:
    """Each code's (axis=1) or factor's (axis=0) share of the total importance; uniform when
    ``r`` is all zero, as in the reference."""
    if r.sum() == 0.0:
        r = np.ones_like(r)
    return r.sum(axis=axis) / r.sum()


def disentanglement_per_code(importance_matrix: np.ndarray) -> np.ndarray:
    """1 - entropy (base n_factors) of each code's row: 1 when a code matters for one factor."""
    r = _check_importance(importance_matrix)
    return _one_minus_entropy(r, axis=1)


def completeness_per_factor(importance_matrix: np.ndarray) -> np.ndarray:
    """1 - entropy (base n_codes) of each factor's column: 1 when one code captures it."""
    r = _check_importance(importance_matrix)
    return _one_minus_entropy(r, axis=0)


def disentanglement_from_importance(importance_matrix: np.ndarray) -> float:
    """Disentanglement of an importance matrix (n_codes, n_factors): per-code scores weighted
    by each code's share of the total importance, so unused codes do not count."""
    r = _check_importance(importance_matrix)
    return float(np.sum(_one_minus_entropy(r, axis=1) * _shares(r, axis=1)))


def completeness_from_importance(importance_matrix: np.ndarray) -> float:
    """Completeness of an importance matrix (n_codes, n_factors): per-factor scores weighted
    by each factor's share of the total importance."""
    r = _check_importance(importance_matrix)
    return float(np.sum(_one_minus_entropy(r, axis=0) * _shares(r, axis=0)))


def dci(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    backend: Backend = "lightgbm",
    n_jobs: int | None = None,
    seed: int | None = None,
) -> dict:
    """DCI scores of codes (n, n_codes) against integer factors (n, n_factors).

    ``backend``: "lightgbm" (default, fast, agrees with the reference within 0.02 on the
    tested codes) or "sklearn" (the reference's classifier, minutes for 10000 x 20 codes).
    ``n_jobs``: factors fitted at once in separate processes (None or 1: one after another,
    -1: all cores); each fit is single-threaded, the numbers do not change. ``seed``: see
    :func:`factordiff.metrics.gbt.fit_gbt_classifier` (the reference leaves sklearn unseeded:
    seed None).

    Returns a dict with floats ``disentanglement``, ``completeness``,
    ``informativeness_train``, ``informativeness_test`` (mean accuracies), the
    ``importance_matrix`` as a float64 ndarray (n_codes, n_factors) (call ``.tolist()`` for
    JSON) and the ``backend`` used.
    """
    if backend not in BACKENDS:
        raise MetricInputError(f"unknown DCI backend {backend!r}; choose one of {BACKENDS}")
    codes_train, factors_train, codes_test, factors_test = check_train_test(
        codes_train, factors_train, codes_test, factors_test
    )
    importance, train_acc, test_acc = fit_gbt_per_factor(
        codes_train, factors_train, codes_test, factors_test, backend, n_jobs, seed
    )
    return {
        "disentanglement": disentanglement_from_importance(importance),
        "completeness": completeness_from_importance(importance),
        "informativeness_train": float(np.mean(train_acc)),
        "informativeness_test": float(np.mean(test_acc)),
        "importance_matrix": importance,
        "backend": backend,
    }

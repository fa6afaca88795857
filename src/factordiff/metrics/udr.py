"""UDR, Unsupervised Disentanglement Ranking (Duan et al., ICLR 2020), as disentanglement_lib
computes it (``evaluation/udr/metrics/udr.py``, ``compute_udr_sklearn``). It needs no
factor labels: it scores how consistently several runs represent the same images.

Definition. Runs 1..M encode the same n images to codes ``z_m`` (n, d_m). Each code is
standardised per dimension, and its inactive dimensions are set to 0 (disentanglement_lib:
mean KL to the prior <= 0.01). For every ordered pair (i, j), i != j, a similarity matrix
``R_ij`` (d_i, d_j) says how strongly each unit of run i relates to each unit of run j:

* ``lasso`` (the default, UDR_L): ``|W|`` of an L1 regression (alpha 0.1) of ``z_j`` on
  ``z_i``, one Lasso per unit of run j;
* ``spearman`` (UDR_S): ``|Spearman rank correlation|`` of every unit pair.

With inactive units removed from ``R`` (rows of run i, columns of run j), the pair's score is
the *relative strength* of its strongest entries, averaged over both directions::

    UDR_ij = 1/2 [ mean_b max_a R(a, b)^2 / sum_a R(a, b) + mean_a max_b R(a, b)^2 / sum_b R(a, b) ]

(a column or row of zeros counts 0). It is 1 when each unit of one run matches exactly one
unit of the other (a permutation, with any signs) and falls toward 1/d as units mix. The UDR
of run j is the median of ``UDR_ij`` over the other runs i. A run is ranked well when the
other runs found the same units: the paper's premise is that disentangled solutions agree
with each other while entangled ones are each entangled differently.

Reference protocol: 1000 images, ``lasso``, KL threshold 0.01. The paper's formula divides
by the active units of both runs together; disentanglement_lib averages each direction
separately (the same when both runs have the same number of active units); we follow the
code. disentanglement_lib zeroes units below a hard-coded 0.01 and filters at its
``kl_filter_threshold``; here both use ``threshold`` (equal at the default).

Deterministic codes (EncDiff's units) have no KL to a prior. A dimension carries no
information when it is constant over the images, so there a dimension is inactive when its
standard deviation is below ``threshold`` times the median standard deviation of the run's
dimensions (scale-free; our extension, recorded in the result as ``activity_rule``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

from factordiff.metrics.utils import MetricInputError, check_codes

CORRELATIONS = ("lasso", "spearman")
LASSO_ALPHA = 0.1


def udr(
    representations: Sequence[np.ndarray],
    kl: Sequence[np.ndarray] | None = None,
    correlation: str = "lasso",
    threshold: float = 0.01,
    filter_inactive: bool = True,
) -> dict:
    """UDR of each of M >= 2 runs from their codes of the same images in the same order.

    ``representations``: M arrays (n, d_m). ``kl``: optional M arrays (d_m,), each unit's mean
    KL to the prior (VAEs); without it, activity is read from each unit's spread. Returns
    ``{"scores": [M], "pairwise": (M, M) with 0 on the diagonal, "similarity": M x M matrices
    (None on the diagonal), "active": [M lists of bool], "activity_rule", "correlation"}``.
    """
    if correlation not in CORRELATIONS:
        raise MetricInputError(f"correlation must be one of {CORRELATIONS}, got {correlation!r}")
    if len(representations) < 2:
        raise MetricInputError(
            f"UDR compares runs: it needs at least 2, got {len(representations)}"
        )
    codes = [check_codes(z, f"representation {m}") for m, z in enumerate(representations)]
    sizes = {z.shape[0] for z in codes}
    if len(sizes) > 1:
        raise MetricInputError(
            f"every run must encode the same images: got {sorted(sizes)} rows (one per run)"
        )
    active, rule = _activity(codes, kl, threshold)
    standard = [_standardise(z) * mask for z, mask in zip(codes, active, strict=True)]
    m = len(codes)
    pairwise = np.zeros((m, m))
    similarity: list[list] = [[None] * m for _ in range(m)]
    for i in range(m):
        for j in range(m):
            if i == j:
                continue
            r = _similarity(standard[i], standard[j], correlation)
            similarity[i][j] = r.tolist()
            if filter_inactive:
                r = r[active[i]][:, active[j]]
            pairwise[i, j] = relative_strength(r)
    scores = [float(np.median(np.delete(pairwise[:, j], j))) for j in range(m)]
    return {
        "scores": scores,
        "pairwise": pairwise.tolist(),
        "similarity": similarity,
        "active": [a.tolist() for a in active],
        "activity_rule": rule,
        "correlation": correlation,
        "threshold": threshold,
        "n_images": codes[0].shape[0],
    }


def relative_strength(r: np.ndarray) -> float:
    """Mean over columns of max^2 / sum, and over rows, averaged (0 for an empty matrix:
    no active unit on one side)."""
    r = np.asarray(r, dtype=np.float64)
    if r.size == 0:
        return 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        cols = np.nan_to_num(r.max(axis=0) ** 2 / r.sum(axis=0))
        rows = np.nan_to_num(r.max(axis=1) ** 2 / r.sum(axis=1))
    return float((np.nanmean(cols) + np.nanmean(rows)) / 2)


def _activity(
    codes: list[np.ndarray], kl: Sequence[np.ndarray] | None, threshold: float
) -> tuple[list[np.ndarray], str]:
    if kl is not None:
        if len(kl) != len(codes):
            raise MetricInputError(f"kl: one array per run expected ({len(codes)}), got {len(kl)}")
        masks = []
        for m, (z, k) in enumerate(zip(codes, kl, strict=True)):
            k = np.asarray(k, dtype=np.float64).ravel()
            if k.shape != (z.shape[1],):
                raise MetricInputError(
                    f"kl[{m}] must have one value per unit ({z.shape[1]}), got shape {k.shape}"
                )
            masks.append(k > threshold)
        return masks, f"mean KL to the prior > {threshold}"
    masks = []
    for z in codes:
        std = z.std(axis=0)
        masks.append(std > threshold * np.median(std))
    return masks, f"standard deviation > {threshold} x the run's median unit standard deviation"


def _standardise(z: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per dimension; constant dimensions stay 0 (as sklearn's
    StandardScaler leaves them)."""
    std = z.std(axis=0)
    return (z - z.mean(axis=0)) / np.where(std > 0, std, 1.0)


def _similarity(a: np.ndarray, b: np.ndarray, correlation: str) -> np.ndarray:
    """R (d_a, d_b): how strongly unit a of one run relates to unit b of the other."""
    if correlation == "spearman":
        ra, rb = rankdata(a, axis=0), rankdata(b, axis=0)
        ra, rb = ra - ra.mean(axis=0), rb - rb.mean(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            corr = (ra.T @ rb) / np.outer(np.linalg.norm(ra, axis=0), np.linalg.norm(rb, axis=0))
        return np.abs(corr)  # NaN where a unit is constant (dropped when inactive)
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import Lasso

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit = Lasso(alpha=LASSO_ALPHA).fit(a, b)
    return np.abs(np.atleast_2d(fit.coef_)).T

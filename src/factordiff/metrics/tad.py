"""TAD, the Total AUROC Difference (Yeats, Liu, Womble, Li, "NashAE: Disentangling
Representations through Adversarial Covariance Minimization", ECCV 2022), the metric of
DyGA's CelebA table; EncDiff and InfoDiffusion compute it too.

Definition (as the official code computes it; see Sources)::

    A[i, j] = max(AUROC(z_j -> a_i), AUROC(-z_j -> a_i))        both signs of each code
    gap_i   = A[i, j1] - A[i, j2]       j1, j2: the best and second-best code for a_i
    H_i     = entropy of a_i,  R_i = max_{k != i} I(a_i; a_k) / H_i       (nats; ratio)
    captured_i  <=>  max_j A[i, j] >= 0.75  and  R_i <= 0.2
    TAD     = sum over captured attributes of gap_i      (reported with n_captured)

``R_i`` is NashAE's "proportion of entropy reduced by another trait": an attribute that
another attribute predicts well (R > 0.2) is left out, since a code could not single it
out. A code may be the best code for several attributes (nothing
assigns codes exclusively), and the second-best code is the best of all *other* codes.
Because both signs count, every AUROC is >= 0.5, so a gap is at most 0.5 and TAD is at
most 0.5 x n_captured (a perfectly disentangled code set scores about 0.5 per attribute).

Sources read (our own code, not copied):
- ericyeats/nashae-beamsynthesis ``ae_utils_exp.py`` (``calculate_auroc``, ``aurocs``,
  ``aurocs_search``) and ``celeba_eval.ipynb`` (gap, mutual-information filter, sum):
  CelebA via torchvision (attributes in {0, 1}), one shuffled batch of 1000 images,
  AUROC from a 101-threshold sweep (step 0.01) over each code's [min, max] range, codes
  whose range is <= 0.2 get AUROC 0.5 (NashAE codes are sigmoid outputs in [0, 1]).
- youngjun-jun/dis-dis (DyGA) ``code/evaluate_renew.py`` (``evaluate_tad``) with
  ``code/ae_utils_exp.py``: the same algorithm with an 11-threshold sweep (step 0.1),
  one shuffled batch of ``--tad_samples`` = 10000 images (seed 42), codes = per-unit PCA
  to one dimension, the same 0.2 range rule.
- EncDiff (ThomasMrY/EncDiff, read from its first-commit copy SelenaGeRuiqi/EncDiff)
  ``celeba_tad.py`` + ``ae_utils_exp.py``: 11-threshold sweep, every output dimension of
  the concept encoder as a code, images from a saved ``test_celeba.npz`` (size not stated).
- isjakewong/InfoDiffusion ``eval_disentanglement.py`` (``TADMetric``): exact
  ``sklearn.metrics.roc_auc_score`` for both signs; the first 10000 latents, 5-fold
  ``KFold(shuffle=True, random_state=0)``, TAD on each 8000-point training fold of
  standardised codes, reported as mean +- std over the folds.

Choices where they differ: by default the AUROC is *exact* (Mann-Whitney U with average
ranks for ties, identical to ``roc_auc_score``); ``auroc="sweep"`` reproduces the
official threshold sweep (right Riemann sum over ``n_thresholds`` equally spaced
thresholds between each code's min and max, equal to theirs up to float rounding of the
threshold positions; 11 for DyGA/EncDiff, 101 for NashAE; combine with
``min_code_range=0.2`` for their dead-code rule). The ROC is monotone, so the
sweep's right sums lie above the exact AUROC (apart from the end segments, O(1/n)): on
Gaussian test codes by 0.01-0.12 with 11 thresholds and 0.001-0.012 with 101, which moves
both gaps and the 0.75 capture test; report the method and ``n_samples`` with every TAD.
An attribute constant in the sample has no AUROC and no entropy: it is skipped with a
note (the official code divides by zero there).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy.stats import rankdata

from factordiff.metrics.utils import MetricInputError, check_codes, entropy, mutual_info

AurocMethod = Literal["exact", "sweep"]


def _column_label(j: int, names: Sequence[str] | None) -> str:
    return f"column {j} ({names[j]!r})" if names is not None else f"column {j}"


def check_attributes(
    attributes: np.ndarray, n: int, names: Sequence[str] | None = None
) -> np.ndarray:
    """int64 (n, n_attributes) in {0, 1}; {-1, 1} (CelebA's ``list_attr_celeba.txt``)
    is converted. Anything else raises, naming the first offending column, because a
    silently mis-read label column would give a plausible but wrong TAD."""
    arr = np.asarray(attributes)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise MetricInputError(
            f"attributes must be a 2-D array (n, n_attributes), got shape {arr.shape}"
        )
    if arr.shape[0] != n:
        raise MetricInputError(
            f"attributes have {arr.shape[0]} rows but the codes have {n}: one row per point"
        )
    if arr.shape[1] == 0:
        raise MetricInputError("attributes have no columns")
    if names is not None and len(names) != arr.shape[1]:
        raise MetricInputError(
            f"attribute_names has {len(names)} names but attributes have {arr.shape[1]} columns"
        )
    if arr.dtype == bool:
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.number):
        raise MetricInputError(f"attributes must be numeric or bool, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    nonfinite = ~np.isfinite(arr)
    if nonfinite.any():
        j = int(np.argwhere(nonfinite.any(axis=0))[0, 0])
        raise MetricInputError(f"attributes {_column_label(j, names)} contains NaN or inf")
    plus_minus = bool((arr == -1).any())
    allowed = (-1.0, 1.0) if plus_minus else (0.0, 1.0)
    bad = ~np.isin(arr, allowed)
    if bad.any():
        j = int(np.argwhere(bad.any(axis=0))[0, 0])
        values = np.unique(arr[:, j]).tolist()
        encoding = "{-1, 1} (another column holds -1)" if plus_minus else "{0, 1} or {-1, 1}"
        raise MetricInputError(
            f"attributes {_column_label(j, names)} is not binary {encoding}: values {values[:10]}"
        )
    if plus_minus:
        arr = (arr + 1.0) / 2.0
    return arr.astype(np.int64)


def _auroc_exact(codes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AUROC of each code (score, higher = positive) for each attribute, (n_attr, n_codes).

    Mann-Whitney form: (sum of the positives' ranks - p(p+1)/2) / (p q), average ranks
    for ties, which is what ``roc_auc_score`` returns. One ``rankdata`` and one matrix
    product serve all attribute-code pairs; the rank sums are half-integers, exact in
    float64, so the only rounding is the final division. Needs 0 < p < n per attribute.
    """
    ranks = rankdata(codes, axis=0)
    pos = labels.sum(axis=0).astype(np.float64)
    neg = labels.shape[0] - pos
    rank_sums = labels.T.astype(np.float64) @ ranks
    return (rank_sums - (pos * (pos + 1.0) / 2.0)[:, None]) / (pos * neg)[:, None]


def _auroc_sweep(codes: np.ndarray, labels: np.ndarray, n_thresholds: int) -> np.ndarray:
    """Both-sign AUROC from the official threshold sweep, (n_attr, n_codes).

    Thresholds ``min + t (max - min)``, t = 0, 1/(K-1), ..., 1; "positive" predicts
    z >= thr, "negative" z < thr; each direction's (FPR, TPR) points are sorted and the
    area is the right Riemann sum sum_k TPR_{k+1} (FPR_{k+1} - FPR_k), as in NashAE's
    ``calculate_auroc``; the larger of the two areas is kept.
    """
    n = labels.shape[0]
    lab = labels.T.astype(np.float64)
    pos = lab.sum(axis=1, keepdims=True)
    neg = n - pos
    t = np.linspace(0.0, 1.0, n_thresholds)
    out = np.empty((labels.shape[1], codes.shape[1]))
    for j in range(codes.shape[1]):
        z = codes[:, j]
        lo, hi = z.min(), z.max()
        pred = (z[:, None] >= (t * (hi - lo) + lo)[None, :]).astype(np.float64)
        tp = lab @ pred
        fp = pred.sum(axis=0)[None, :] - tp
        areas = []
        for tp_d, fp_d in ((tp, fp), (pos - tp, neg - fp)):
            tpr = np.sort(tp_d / pos, axis=1)
            fpr = np.sort(fp_d / neg, axis=1)
            areas.append(np.sum(tpr[:, 1:] * np.diff(fpr, axis=1), axis=1))
        out[:, j] = np.maximum(areas[0], areas[1])
    return out


def auroc_matrix(
    codes: np.ndarray,
    labels: np.ndarray,
    *,
    method: AurocMethod = "exact",
    n_thresholds: int = 11,
    min_code_range: float = 0.0,
) -> np.ndarray:
    """Both-sign AUROC ``A[i, j] = max(AUROC(z_j), AUROC(-z_j))`` for attribute i, code j.

    ``labels`` must be {0, 1} with both values present in every column (``tad`` removes
    constant attributes first). Codes whose range max - min is <= ``min_code_range`` get
    0.5, as the official code does for its dead codes (range <= 0.2).
    """
    codes = np.asarray(codes, dtype=np.float64)
    labels = np.asarray(labels)
    if method == "exact":
        a = _auroc_exact(codes, labels)
        a = np.maximum(a, 1.0 - a)
    elif method == "sweep":
        if n_thresholds < 2:
            raise MetricInputError(f"n_thresholds must be >= 2, got {n_thresholds}")
        a = _auroc_sweep(codes, labels, n_thresholds)
    else:
        raise MetricInputError(f"auroc method must be 'exact' or 'sweep', got {method!r}")
    dead = (codes.max(axis=0) - codes.min(axis=0)) <= min_code_range
    a[:, dead] = 0.5
    return a


def entropy_reduction(labels: np.ndarray) -> np.ndarray:
    """Per attribute, max over the *other* attributes of I(a_i; a_k) / H(a_i).

    NashAE's "proportion of entropy reduced by another trait", the filter for attributes
    that another attribute already predicts. NaN for a constant attribute (H = 0); 0 when
    there is only one attribute.
    """
    k = labels.shape[1]
    h = entropy(labels)
    mi = np.zeros((k, k))
    for i in range(k):
        for j in range(i + 1, k):
            mi[i, j] = mi[j, i] = mutual_info(labels[:, i], labels[:, j])
    best_other = mi.max(axis=1) if k > 1 else np.zeros(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(h > 0, best_other / np.where(h > 0, h, 1.0), np.nan)


def tad(
    codes: np.ndarray,
    attributes: np.ndarray,
    *,
    auroc_threshold: float = 0.75,
    entropy_reduction_threshold: float = 0.2,
    attribute_names: Sequence[str] | None = None,
    auroc: AurocMethod = "exact",
    n_thresholds: int = 11,
    min_code_range: float = 0.0,
) -> dict:
    """TAD of ``codes`` (n, n_codes) w.r.t. binary ``attributes`` (n, n_attributes).

    ``attributes`` in {0, 1} or {-1, 1} (converted). Defaults follow NashAE's thresholds
    (0.75, 0.2) with exact AUROC; ``auroc="sweep"`` with ``n_thresholds`` (11: DyGA and
    EncDiff, 101: NashAE) and ``min_code_range=0.2`` reproduces the official code.

    Returns ``tad`` (sum of gaps over captured attributes), ``n_captured``, ``captured``
    (names if ``attribute_names`` is given, else indices), ``captured_indices``,
    per-attribute lists ``auroc_gap``, ``best_auroc``, ``best_code``, ``second_code``,
    ``entropy_reduction`` (None for skipped attributes), ``excluded_correlated``,
    ``skipped`` (constant attributes, with the reason), the ``auroc`` matrix
    (n_attributes x n_codes, a row of None when skipped), ``n_samples``, ``n_codes``,
    ``n_attributes``, ``auroc_method``, ``n_thresholds`` (None for exact) and ``notes``.
    """
    if auroc not in ("exact", "sweep"):
        raise MetricInputError(f"auroc must be 'exact' or 'sweep', got {auroc!r}")
    codes = check_codes(codes)
    n, n_codes = codes.shape
    if n_codes < 2:
        raise MetricInputError(
            "TAD needs at least 2 codes (each attribute's score is the gap between its "
            f"best and second-best code), got {n_codes}"
        )
    names = list(attribute_names) if attribute_names is not None else None
    labels = check_attributes(attributes, n, names)
    n_attr = labels.shape[1]

    def label(i: int) -> str | int:
        return names[i] if names is not None else i

    n_pos = labels.sum(axis=0)
    valid = (n_pos > 0) & (n_pos < n)
    a = np.full((n_attr, n_codes), np.nan)
    if valid.any():
        a[valid] = auroc_matrix(
            codes,
            labels[:, valid],
            method=auroc,
            n_thresholds=n_thresholds,
            min_code_range=min_code_range,
        )
    ratio = entropy_reduction(labels)

    order = np.argsort(-np.nan_to_num(a, nan=-1.0), axis=1, kind="stable")
    best_code = order[:, 0]
    second_code = order[:, 1]
    rows = np.arange(n_attr)
    best = a[rows, best_code]
    gap = best - a[rows, second_code]

    captured = valid & (best >= auroc_threshold) & (ratio <= entropy_reduction_threshold)
    correlated = valid & (best >= auroc_threshold) & (ratio > entropy_reduction_threshold)
    captured_idx = [int(i) for i in np.flatnonzero(captured)]

    skipped = [
        {
            "attribute": label(int(i)),
            "reason": f"constant in the sample (all {int(labels[0, i])}): "
            "AUROC and entropy undefined",
        }
        for i in np.flatnonzero(~valid)
    ]
    notes = []
    if skipped:
        notes.append(f"{len(skipped)} constant attribute(s) skipped; see 'skipped'")
    method_note = (
        "exact AUROC (Mann-Whitney, average ranks for ties)"
        if auroc == "exact"
        else f"threshold-sweep AUROC with {n_thresholds} thresholds (official-code estimate)"
    )
    notes.append(f"{method_note} on {n} samples")

    def per_attr(x: np.ndarray, cast: type) -> list:
        return [cast(v) if ok else None for v, ok in zip(x, valid, strict=True)]

    return {
        "tad": float(gap[captured].sum()),
        "n_captured": len(captured_idx),
        "captured": [label(i) for i in captured_idx],
        "captured_indices": captured_idx,
        "auroc_gap": per_attr(gap, float),
        "best_auroc": per_attr(best, float),
        "best_code": per_attr(best_code, int),
        "second_code": per_attr(second_code, int),
        "entropy_reduction": per_attr(ratio, float),
        "excluded_correlated": [label(int(i)) for i in np.flatnonzero(correlated)],
        "skipped": skipped,
        "auroc": [row.tolist() if ok else None for row, ok in zip(a, valid, strict=True)],
        "attribute_names": names,
        "n_samples": int(n),
        "n_codes": int(n_codes),
        "n_attributes": int(n_attr),
        "auroc_method": auroc,
        "n_thresholds": int(n_thresholds) if auroc == "sweep" else None,
        "notes": notes,
    }

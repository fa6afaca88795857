"""Modularity and explicitness (Ridgeway & Zemel 2018), as disentanglement_lib computes them.

Modularity: codes discretised into 20 equal-width bins; m[i, k] = I(z_i; v_k) in nats. For
each code, with theta_i = max_k m[i, k] and K factors::

    delta_i = (sum_k m[i, k]^2 - theta_i^2) / (theta_i^2 (K - 1)),  modularity_i = 1 - delta_i

a code carrying no information (theta_i = 0) scores 0; modularity is the mean over all
codes. Explicitness: codes standardised with the training mean/std, one
``LogisticRegression()`` per factor on all codes, macro one-vs-rest ROC-AUC of its
predicted probabilities; mean over factors, on the training and on the test points.

Reference protocol: 10000 train / 5000 test points sampled with ``RandomState(0)``.
Deviation, only where the reference would crash: a constant code is left at 0 instead
of being divided by a zero standard deviation; a factor class absent from the test points
is left out of that factor's test ROC-AUC.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from factordiff.metrics.utils import (
    MetricInputError,
    check_pair,
    check_train_test,
    histogram_discretize,
    mutual_info_matrix,
)


def modularity_from_mutual_info(mutual_info: np.ndarray) -> float:
    """Mean per-code modularity of an (n_codes, n_factors) mutual-information matrix."""
    squared = np.square(mutual_info)
    top = squared.max(axis=1)
    n_factors = squared.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = (squared.sum(axis=1) - top) / (top * (n_factors - 1.0))
    score = np.where(top == 0, 0.0, 1.0 - delta)
    return float(np.mean(score))


def _macro_auc(classes: np.ndarray, labels: np.ndarray, proba: np.ndarray) -> float:
    """Mean one-vs-rest ROC-AUC over the classes present (and not alone) in ``labels``."""
    aucs = []
    for c, cls in enumerate(classes):
        positive = labels == cls
        if 0 < positive.sum() < len(labels):
            aucs.append(roc_auc_score(positive, proba[:, c]))
    return float(np.mean(aucs)) if aucs else float("nan")


def explicitness(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
) -> tuple[float, float]:
    """(train, test) explicitness: mean over factors of a logistic regression's ROC-AUC."""
    mean = codes_train.mean(axis=0)
    std = codes_train.std(axis=0)
    std = np.where(std == 0, 1.0, std)
    x_train = (codes_train - mean) / std
    x_test = (codes_test - mean) / std
    train, test = [], []
    for k in range(factors_train.shape[1]):
        if len(np.unique(factors_train[:, k])) < 2:
            raise MetricInputError(f"factor {k} is constant in the training points")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf = LogisticRegression().fit(x_train, factors_train[:, k])
        train.append(_macro_auc(clf.classes_, factors_train[:, k], clf.predict_proba(x_train)))
        test.append(_macro_auc(clf.classes_, factors_test[:, k], clf.predict_proba(x_test)))
    return float(np.mean(train)), float(np.mean(test))


def modularity(
    codes: np.ndarray,
    factors: np.ndarray,
    codes_test: np.ndarray | None = None,
    factors_test: np.ndarray | None = None,
    num_bins: int = 20,
) -> dict:
    """Modularity of ``codes`` and the explicitness of a linear probe on them.

    Returns ``{"modularity", "explicitness", "explicitness_train"}``; ``explicitness`` is
    the test-set ROC-AUC when test points are given (then also ``explicitness_test``),
    else the training-set one.
    """
    codes, factors = check_pair(codes, factors)
    if factors.shape[1] < 2:
        raise MetricInputError("modularity needs at least 2 factors (it is undefined for one)")
    m = mutual_info_matrix(histogram_discretize(codes, num_bins), factors)
    out = {"modularity": modularity_from_mutual_info(m)}
    if codes_test is None:
        train, _ = explicitness(codes, factors, codes, factors)
        out.update(explicitness=train, explicitness_train=train)
        return out
    if factors_test is None:
        raise MetricInputError("codes_test given without factors_test")
    codes, factors, codes_test, factors_test = check_train_test(
        codes, factors, codes_test, factors_test
    )
    train, test = explicitness(codes, factors, codes_test, factors_test)
    out.update(explicitness=test, explicitness_train=train, explicitness_test=test)
    return out

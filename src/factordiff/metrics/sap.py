"""SAP, the Separated Attribute Predictability score (Kumar et al. 2018), discrete variant.

Definition as in disentanglement_lib with ``continuous_factors=False`` (the study
configs): for every pair (code i, factor k) a linear SVM (``LinearSVC(C=0.01,
class_weight="balanced")``) is trained to predict factor k from code i alone on the
training points; its accuracy on the test points fills the score matrix S[i, k]. For each
factor, the gap between the best and second-best code's accuracy; SAP is the mean gap::

    SAP = 1/K sum_k (S_{(1)k} - S_{(2)k})

With ``continuous_factors=True`` (not the study setting) S[i, k] is instead the squared
correlation cov(z_i, v_k)^2 / (var z_i var v_k) on the training points (0 for a code
with variance <= 1e-12), as in the reference.

Reference protocol: 10000 train / 5000 test points sampled with ``RandomState(0)``.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from factordiff.metrics.utils import MetricInputError, check_train_test


def sap_score_matrix(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
) -> np.ndarray:
    """S[i, k]: test accuracy of a 1-D linear SVM predicting factor k from code i."""
    score = np.zeros((codes_train.shape[1], factors_train.shape[1]))
    for i in range(codes_train.shape[1]):
        x_train = codes_train[:, i : i + 1]
        x_test = codes_test[:, i : i + 1]
        for k in range(factors_train.shape[1]):
            if len(np.unique(factors_train[:, k])) < 2:
                raise MetricInputError(f"factor {k} is constant in the training points")
            classifier = LinearSVC(C=0.01, class_weight="balanced")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                classifier.fit(x_train, factors_train[:, k])
            score[i, k] = np.mean(classifier.predict(x_test) == factors_test[:, k])
    return score


def sap_correlation_matrix(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """S[i, k]: squared correlation of code i and factor k (the continuous-factor SAP)."""
    score = np.zeros((codes.shape[1], factors.shape[1]))
    for i in range(codes.shape[1]):
        for k in range(factors.shape[1]):
            cov = np.cov(codes[:, i], factors[:, k], ddof=1)
            if cov[0, 0] > 1e-12:
                score[i, k] = cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1])
    return score


def sap(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    continuous_factors: bool = False,
) -> dict:
    """SAP of the codes; returns ``{"sap": float, "score_matrix": (n_codes, n_factors)}``."""
    codes_train, factors_train, codes_test, factors_test = check_train_test(
        codes_train, factors_train, codes_test, factors_test
    )
    if codes_train.shape[1] < 2:
        raise MetricInputError("SAP needs at least 2 codes (it is a gap between the top two)")
    if continuous_factors:
        score = sap_correlation_matrix(codes_train, factors_train)
    else:
        score = sap_score_matrix(codes_train, factors_train, codes_test, factors_test)
    top = np.sort(score, axis=0)
    return {"sap": float(np.mean(top[-1] - top[-2])), "score_matrix": score.tolist()}

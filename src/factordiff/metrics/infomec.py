"""InfoMEC: InfoM (modularity), InfoE (explicitness), InfoC (compactness).

Papers: Hsu, Dorrell, Whittington, Wu, Finn, "Disentanglement via Latent Quantization",
NeurIPS 2023 (arXiv 2305.18378), and Hsu, Hamid, Burns, Finn, Wu, "Tripod: Three
Complementary Inductive Biases for Disentangled Representation Learning", ICML 2024
(arXiv 2404.10282). Reference code: kylehkhsu/tripod ``disentangle/metrics/infomec.py``;
the DyGA evaluation (youngjun-jun/dis-dis ``code/evaluate_renew.py``) runs a copy of it
on 10000 points drawn like DCI's (``RandomState(0)``, batches of 16) with continuous
latents. Our own code, following those definitions.

Definition, for sources (factors) s_i, i = 1..K, and latents (codes) z_j::

    NMI[i, j] = I(s_i; z_j) / H(s_i)                      (nats / nats)
    active    = IQR(z_j) > max_j IQR(z_j) / 10            (continuous latents)
                IQR(z_j) > 0.1                            (discrete latents)
    InfoM = (mean over active j of  max_i NMI[i, j] / sum_i NMI[i, j]  - 1/K) / (1 - 1/K)
    InfoC = (mean over i of  max_{active j} NMI[i, j] / sum_{active j} NMI[i, j] - 1/L)
            / (1 - 1/L)                                    L = number of active latents
    InfoE = mean over i of  (H_null(s_i) - H(s_i | z)) / H_null(s_i)

- I(s_i; z_j), continuous latents: each latent standardised, then scikit-learn's
  ``mutual_info_classif(z_j, s_i, discrete_features=False, n_neighbors=10)`` (the
  Kraskov/Ross nearest-neighbour estimator). The estimator adds noise of relative size
  1e-10 to the codes; the reference draws it from numpy's global state, we from one
  ``RandomState(seed)`` in the reference's order (factor by factor, code by code), so
  ``np.random.seed(seed)`` before the reference gives it our noise. The noise matters:
  it decides whether points at exactly the neighbour radius are counted, which on tiny
  samples (tens of points) moves the estimate by ~0.01; from hundreds of points on it
  rarely changes a count.
  Discrete latents: each latent's distinct values are its classes and I is the plug-in
  ``mutual_info_score``. H(s_i) is the plug-in entropy of the factor's classes.
- H(s_i | z): the log loss, on the same points, of an unregularised multinomial
  ``LogisticRegression`` (lbfgs, 100 iterations, ``class_weight="balanced"``) from all
  latents (standardised; one-hot encoded when discrete) to s_i; H_null the same fit on a
  feature matrix of zeros. With balanced class weights that null fit predicts the uniform
  distribution, so H_null = log(number of classes), not the factor's entropy.
- InfoE uses every latent, InfoM and InfoC only the active ones.

All three are in [0, 1]; 1 is best. A perfectly disentangled code set (one latent per
factor, each a function of its factor) scores InfoM = InfoC ~ 1 and InfoE ~ 1; a rotation
mixes every latent with every factor and lowers InfoM and InfoC but keeps InfoE (a linear
readout sees through it). Relabelling latents or factors (a permutation) changes nothing.

Where the reference divides 0 by 0 (an active latent with no information about any
factor; a factor that no active latent informs) it returns NaN; here that ratio counts
as 1/K (resp. 1/L), i.e. zero modularity (compactness) for that latent (factor). With a
single active latent InfoC is undefined (1 - 1/L = 0) and is returned as NaN, as in the
reference. The dis-dis copy adds 1e-6 to InfoC's denominator; the tripod code (followed
here) does not. With no active latent all three are 0, as in the reference.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_selection import mutual_info_classif
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from factordiff.metrics.utils import MetricInputError, _dense_labels, check_pair, mutual_info

#: k of the nearest-neighbour mutual-information estimator (the reference's setting).
N_NEIGHBORS = 10


def _labels(factors: np.ndarray) -> np.ndarray:
    """Each column relabelled to 0..n_classes-1 (sklearn's ``LabelEncoder``)."""
    return np.stack([_dense_labels(factors[:, i])[0] for i in range(factors.shape[1])], axis=1)


def _standardise(codes: np.ndarray) -> np.ndarray:
    """(x - mean) / std per column, a constant column left at 0."""
    return StandardScaler().fit_transform(codes)


def normalised_mutual_info(
    codes: np.ndarray, factors: np.ndarray, discrete_latents: bool = False, seed: int = 0
) -> np.ndarray:
    """(n_factors, n_codes) NMI[i, j] = I(s_i; z_j) / H(s_i) as InfoMEC defines it."""
    sources = _labels(factors)
    if discrete_latents:
        latents = _labels(codes)
    else:  # column by column, as the reference does (the rounding can differ from all at once)
        latents = np.concatenate(
            [_standardise(codes[:, j : j + 1]) for j in range(codes.shape[1])], 1
        )
    nmi = np.empty((sources.shape[1], latents.shape[1]))
    noise = np.random.RandomState(seed)  # one stream, drawn factor by factor, code by code
    for i in range(sources.shape[1]):
        for j in range(latents.shape[1]):
            if discrete_latents:
                nmi[i, j] = mutual_info(sources[:, i], latents[:, j])
            else:
                nmi[i, j] = mutual_info_classif(
                    latents[:, j : j + 1], sources[:, i], discrete_features=False,
                    n_neighbors=N_NEIGHBORS, random_state=noise,
                )[0]  # fmt: skip
        nmi[i] /= mutual_info(sources[:, i], sources[:, i])
    return nmi


def _log_loss_of_fit(features, labels: np.ndarray) -> float:
    model = LogisticRegression(C=np.inf, class_weight="balanced", solver="lbfgs", max_iter=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(features, labels)
    return float(log_loss(labels, model.predict_proba(features)))


def explicitness(codes: np.ndarray, factors: np.ndarray, discrete_latents: bool = False) -> list:
    """Per factor, (H_null - H(s | z)) / H_null from linear (logistic) readouts of all codes."""
    sources = _labels(factors)
    features = OneHotEncoder().fit_transform(codes) if discrete_latents else _standardise(codes)
    null = np.zeros_like(codes)
    out = []
    for i in range(sources.shape[1]):
        conditional = _log_loss_of_fit(features, sources[:, i])
        marginal = _log_loss_of_fit(null, sources[:, i])
        out.append((marginal - conditional) / marginal)
    return out


def _normalised_concentration(nmi: np.ndarray, axis: int, n_options: int) -> float:
    """Mean of max/sum along ``axis`` rescaled so that uniform -> 0 and one-hot -> 1."""
    top, total = nmi.max(axis=axis), nmi.sum(axis=axis)
    ratio = np.divide(top, total, out=np.full_like(top, 1.0 / n_options), where=total > 0)
    return float((ratio.mean() - 1.0 / n_options) / (1.0 - 1.0 / n_options))


def infomec(
    codes: np.ndarray,
    factors: np.ndarray,
    *,
    discrete_latents: bool = False,
    seed: int = 0,
) -> dict:
    """InfoM, InfoE, InfoC of ``codes`` (n, n_codes) against ``factors`` (n, n_factors).

    ``discrete_latents``: treat each code's distinct values as classes (quantised
    latents); default continuous, as in the DyGA evaluation. ``seed`` seeds the
    estimator's tie-breaking noise. Returns ``infom``, ``infoe``, ``infoc``, ``nmi``
    (n_factors, n_codes), ``active_latents`` (bool per code), ``infoe_per_factor`` and
    ``num_active_latents``.
    """
    codes, factors = check_pair(codes, factors)
    n_sources = factors.shape[1]
    if n_sources < 2:
        raise MetricInputError("InfoMEC needs at least 2 factors (InfoM compares them)")
    constant = [i for i in range(n_sources) if len(np.unique(factors[:, i])) < 2]
    if constant:
        raise MetricInputError(
            f"factor column(s) {constant} take a single value: their entropy is 0 and "
            "InfoMEC's normalisation divides by it"
        )
    nmi = normalised_mutual_info(codes, factors, discrete_latents, seed)
    q1, q3 = np.quantile(codes, [0.25, 0.75], axis=0)
    iqr = q3 - q1
    active = iqr > 0.1 if discrete_latents else iqr > iqr.max() / 10
    n_active = int(active.sum())
    result = {
        "nmi": nmi,
        "active_latents": active,
        "num_active_latents": n_active,
        "discrete_latents": discrete_latents,
    }
    if n_active == 0:
        return {"infom": 0.0, "infoe": 0.0, "infoc": 0.0, **result}
    pruned = nmi[:, active]
    infom = _normalised_concentration(pruned, 0, n_sources)
    infoc = float("nan") if n_active == 1 else _normalised_concentration(pruned, 1, n_active)
    per_factor = explicitness(codes, factors, discrete_latents)
    return {
        "infom": infom,
        "infoe": float(np.mean(per_factor)),
        "infoc": infoc,
        "infoe_per_factor": per_factor,
        **result,
    }

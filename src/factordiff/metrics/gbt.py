"""Gradient-boosted-tree classifiers with impurity-based feature importances.

disentanglement_lib's DCI (and the downstream-task probes built on the same idea) fit
``sklearn.ensemble.GradientBoostingClassifier()`` with default settings and read its
``feature_importances_``. That fit is slow (minutes for 10000 x 20 codes and Shapes3D's
factor sizes), so there are two backends:

``"sklearn"``
    The reference itself: ``GradientBoostingClassifier(random_state=seed)``.

``"lightgbm"`` (default)
    The same boosting algorithm run by LightGBM's tree learner. sklearn fits, per stage
    and per class (one tree per stage for 2 classes), a depth-3 least-squares regression
    tree on the negative gradient ``y_k - p_k`` and then replaces every leaf value by one
    Newton step, ``(K-1)/K * sum(y_k - p_k) / sum(p_k (1 - p_k))`` (no ``(K-1)/K`` for 2
    classes). Its importances are the trees' variance reductions
    ``G_L^2/n_L + G_R^2/n_R - G^2/n`` (``G``: sum of the residuals in a node), averaged over
    trees and normalised.

    LightGBM's own objectives choose splits and measure gain with the Hessian
    ``p (1 - p)`` in place of the counts ``n``; that weights points by how *uncertain* the
    model is, and on the Shapes3D-like test codes moved D and C by up to 0.03 from the
    reference (measured: mixed codes D 0.921 vs 0.949). So here the trees are grown with a
    custom objective whose gradient is ``p - y`` and whose Hessian is 1: LightGBM's split
    gain is then exactly sklearn's variance reduction, and ``importance_type="gain"`` is
    proportional to sklearn's importances. After each round the leaf values are overwritten
    with sklearn's Newton step (``set_leaf_output``), and the raw scores are tracked here,
    so the boosting path follows sklearn's. What remains different: LightGBM's histogram
    binning (above 5000 training points, 255 split candidates per code instead of every
    midpoint; see ``EXACT_BINS_UP_TO``), its single-precision gradients, and how ties are
    broken. Agreement is tested, not assumed (``tests/test_dci.py``,
    ``tests/test_reference_agreement.py``, ``benchmarks/metrics_speed.py``): within 0.005 of
    the reference's D, C and I on 10000 x 20 Shapes3D-like codes, ~37x faster (one core
    each); within ~0.001 with exact bins (1000-5000 points).

    LightGBM's default ``feature_importances_`` (split counts) must not be used: on the same
    codes it gave D 0.07 where the reference gives 0.91.

    Each fit is single-threaded by default: the trees are tiny (depth 3) and OpenMP threads
    spend their time spin-waiting; on a busy 2-core machine 2 threads made a 10000 x 20 fit
    17-40x slower. Parallelism is over factors, in processes (:func:`fit_gbt_per_factor`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from factordiff.metrics.utils import MetricInputError

Backend = Literal["sklearn", "lightgbm"]
BACKENDS: tuple[str, ...] = ("sklearn", "lightgbm")

# sklearn's GradientBoostingClassifier defaults, which the reference uses.
N_ESTIMATORS = 100
LEARNING_RATE = 0.1
MAX_DEPTH = 3
# LightGBM split candidates per code. Binning is what is left between the backends. With one
# bin per distinct value (exact: every midpoint, as sklearn) the importances follow sklearn's
# to ~5e-4 in D/C, at a cost growing with the bins. With 255 bins, points sharing a bin
# across a class boundary leak importance to other codes: D/C low by 0.019 at 1000 training
# points, 0.014 at 3000, 0.007 at 5000, 0.003 at 10000 (clean one-code-per-factor codes;
# less on mixed codes). Hence exact bins up to EXACT_BINS_UP_TO training points (10000 x 20:
# exact ~38 s, 255 bins ~6 s, sklearn ~220 s), 255 bins above.
MAX_BIN = 255
EXACT_BINS_UP_TO = 5000


def default_max_bin(n_train: int) -> int:
    """Exact bins (one per distinct value) for up to EXACT_BINS_UP_TO points, else MAX_BIN."""
    return max(MAX_BIN, n_train) if n_train <= EXACT_BINS_UP_TO else MAX_BIN


def _lightgbm_params(
    n_trees_per_round: int, n_threads: int, seed: int | None, max_bin: int
) -> dict:
    """LightGBM settings that make its tree learner grow sklearn's default trees."""
    return {
        "objective": "none",  # gradients come from _fit_lightgbm (custom objective)
        "num_class": n_trees_per_round,
        "boost_from_average": False,  # the initial score is tracked here, as sklearn's prior
        "learning_rate": LEARNING_RATE,
        "max_depth": MAX_DEPTH,
        "num_leaves": 2**MAX_DEPTH,  # a full depth-3 tree, like sklearn's
        "min_data_in_leaf": 1,  # sklearn min_samples_leaf=1
        "min_sum_hessian_in_leaf": 1e-3,  # Hessian is 1 per point: any leaf with a point
        "min_gain_to_split": 0.0,
        "lambda_l1": 0.0,
        "lambda_l2": 0.0,
        "bagging_fraction": 1.0,  # sklearn subsample=1.0
        "bagging_freq": 0,
        "feature_fraction": 1.0,  # sklearn max_features=None
        "feature_fraction_bynode": 1.0,
        "max_bin": int(max_bin),
        "min_data_in_bin": 1,
        "force_col_wise": True,
        "deterministic": True,
        "seed": 0 if seed is None else int(seed),
        "num_threads": max(1, int(n_threads)),
        "verbose": -1,
    }


def _encode_labels(y_train: np.ndarray, y_test: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Dense 0..K-1 training labels; test labels unseen in training map to -1 (never right)."""
    classes, train = np.unique(y_train, return_inverse=True)
    if len(classes) < 2:
        raise MetricInputError(
            f"a factor takes a single value ({classes[0]}) in the training points; a classifier "
            "needs at least 2 classes (drop constant factors before the metric)"
        )
    pos = np.clip(np.searchsorted(classes, y_test), 0, len(classes) - 1)
    test = np.where(classes[pos] == y_test, pos, -1)
    return train.reshape(-1), test, len(classes)


def _newton_leaf_values(
    leaves: np.ndarray, residual: np.ndarray, prob: np.ndarray, factor: float
) -> np.ndarray:
    """sklearn's leaf values: ``factor * mean(residual) / mean(p (1 - p))`` per leaf, 0 where
    the Hessian vanishes (sklearn's ``_safe_divide``)."""
    count = np.bincount(leaves).astype(np.float64)
    num = np.bincount(leaves, weights=residual)
    den = np.bincount(leaves, weights=prob * (1.0 - prob))
    safe = count > 0
    num[safe] /= count[safe]
    den[safe] /= count[safe]
    ok = safe & (np.abs(den) >= 1e-150)
    out = np.zeros_like(num)
    out[ok] = factor * num[ok] / den[ok]
    return out


def _fit_lightgbm(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    n_classes: int,
    n_threads: int,
    seed: int | None,
    max_bin: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """sklearn's gradient boosting on LightGBM trees (see the module docstring).

    Returns the normalised gain importances and the predicted class indices of the
    training and test points.
    """
    import lightgbm as lgb

    n = len(y_train)
    binary = n_classes == 2
    n_trees = 1 if binary else n_classes
    prior = np.bincount(y_train, minlength=n_classes) / n
    # sklearn's initial raw score: the log-odds (2 classes) or log-prior of each class
    eps = np.finfo(np.float64).eps
    prior = np.clip(prior, eps, 1 - eps)
    init = np.log(prior[1:2] / prior[0:1]) if binary else np.log(prior)
    target = y_train[:, None].astype(np.float64) if binary else np.eye(n_classes)[y_train]
    factor = 1.0 if binary else (n_classes - 1) / n_classes

    raw = np.tile(init, (n, 1))

    def classes_of(scores: np.ndarray) -> np.ndarray:
        return (scores[:, 0] > 0).astype(np.int64) if binary else np.argmax(scores, axis=1)

    if not (x_train.max(axis=0) > x_train.min(axis=0)).any():
        # Nothing to split on (LightGBM refuses such data). sklearn's trees are then roots
        # whose Newton steps are 0 at the prior: zero importances, majority-class predictions.
        test_raw = np.tile(init, (len(x_test), 1))
        return np.zeros(x_train.shape[1]), classes_of(raw), classes_of(test_raw)

    if max_bin is None:
        max_bin = default_max_bin(n)
    params = _lightgbm_params(n_trees, n_threads, seed, max_bin)
    # predict() does not inherit the booster's threads: pass them, or it uses every core
    threads = params["num_threads"]
    booster = lgb.Booster(params, lgb.Dataset(x_train, label=y_train, params=params))
    state: dict[str, np.ndarray] = {}

    def objective(_preds: np.ndarray, _data: object) -> tuple[np.ndarray, np.ndarray]:
        # LightGBM's own scores hold its (replaced) leaf values: use the tracked ``raw``.
        if binary:
            prob = 1.0 / (1.0 + np.exp(-raw))
        else:
            e = np.exp(raw - raw.max(axis=1, keepdims=True))
            prob = e / e.sum(axis=1, keepdims=True)
        state["prob"] = prob
        grad = prob - target
        if binary:
            grad = grad[:, 0]
        return grad, np.ones_like(grad)

    for it in range(N_ESTIMATORS):
        if booster.update(fobj=objective):
            # No tree could split: the gradients do not vary with the codes (practically
            # unreachable once constant codes are handled above). Stop where LightGBM stops.
            break
        leaves = booster.predict(
            x_train, start_iteration=it, num_iteration=1, pred_leaf=True, num_threads=threads
        )
        leaves = np.asarray(leaves, dtype=np.int64).reshape(n, n_trees)
        prob = state["prob"]
        for k in range(n_trees):
            values = LEARNING_RATE * _newton_leaf_values(
                leaves[:, k], target[:, k] - prob[:, k], prob[:, k], factor
            )
            for leaf, value in enumerate(values):
                booster.set_leaf_output(it * n_trees + k, leaf, float(value))
            raw[:, k] += values[leaves[:, k]]

    importances = np.abs(booster.feature_importance(importance_type="gain")).astype(np.float64)
    total = importances.sum()
    if total > 0:
        importances /= total

    if booster.num_trees() > 0:
        test_raw = booster.predict(x_test, raw_score=True, num_threads=threads)
        test_raw = np.asarray(test_raw).reshape(-1, n_trees)
    else:
        test_raw = np.zeros((len(x_test), n_trees))
    return importances, classes_of(raw), classes_of(test_raw + init)


def _fit_sklearn(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, seed: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.ensemble import GradientBoostingClassifier

    model = GradientBoostingClassifier(random_state=seed).fit(x_train, y_train)
    importances = np.abs(model.feature_importances_).astype(np.float64)
    return importances, model.predict(x_train), model.predict(x_test)


def fit_gbt_classifier(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    backend: Backend = "lightgbm",
    n_threads: int = 1,
    seed: int | None = None,
    max_bin: int | None = None,
) -> tuple[np.ndarray, float, float]:
    """Fit one gradient-boosted classifier of ``y`` (1-D labels) on all columns of ``x``.

    Returns ``(importances, train_accuracy, test_accuracy)``: importances (n_features,),
    non-negative, summing to 1 (all 0 when no tree could split), as sklearn's
    ``feature_importances_``. ``n_threads``: LightGBM's OpenMP threads (sklearn's fit is
    single-threaded). Keep 1 unless the machine is idle and the data large: with these small
    trees OpenMP threads spin-wait, and on a shared 2-core machine 2 threads made the
    10000 x 20 fit 17-40x *slower* than 1 (6 s -> 100-240 s). ``seed``: sklearn's
    ``random_state`` (None, as in the reference, leaves feature-order ties to chance);
    LightGBM is deterministic, seed None means 0. ``max_bin``: LightGBM's split candidates
    per code (None: :func:`default_max_bin`; ``>= n`` reproduces sklearn's exact splits).
    Inputs are assumed checked (see ``factordiff.metrics.utils.check_pair``).
    """
    if backend not in BACKENDS:
        raise MetricInputError(f"unknown GBT backend {backend!r}; choose one of {BACKENDS}")
    x_train = np.asarray(x_train, dtype=np.float64)
    x_test = np.asarray(x_test, dtype=np.float64)
    y_train_enc, y_test_enc, n_classes = _encode_labels(np.asarray(y_train), np.asarray(y_test))
    if backend == "sklearn":
        importances, pred_train, pred_test = _fit_sklearn(x_train, y_train_enc, x_test, seed)
    else:
        importances, pred_train, pred_test = _fit_lightgbm(
            x_train, y_train_enc, x_test, n_classes, n_threads, seed, max_bin
        )
    train_acc = float(np.mean(pred_train == y_train_enc))
    test_acc = float(np.mean(pred_test == y_test_enc))
    return importances, train_acc, test_acc


def fit_gbt_per_factor(
    codes_train: np.ndarray,
    factors_train: np.ndarray,
    codes_test: np.ndarray,
    factors_test: np.ndarray,
    backend: Backend = "lightgbm",
    n_jobs: int | None = None,
    seed: int | None = None,
    max_bin: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One classifier per factor column, on all codes.

    Returns ``(importance_matrix (n_codes, n_factors), train_accuracy (n_factors,),
    test_accuracy (n_factors,))``. ``n_jobs``: factors fitted at once, in separate
    processes, each fit single-threaded (None or 1: one after another; -1: all cores). Same
    numbers either way; processes, unlike OpenMP threads, degrade gracefully on a busy
    machine. ``seed``, ``max_bin``: see :func:`fit_gbt_classifier`.
    """
    n_factors = factors_train.shape[1]
    kwargs = {"backend": backend, "n_threads": 1, "seed": seed, "max_bin": max_bin}
    jobs = [
        (codes_train, factors_train[:, j], codes_test, factors_test[:, j]) for j in range(n_factors)
    ]
    if n_jobs is not None and n_jobs != 1 and n_factors > 1:
        from joblib import Parallel, delayed

        results = Parallel(n_jobs=n_jobs)(
            delayed(fit_gbt_classifier)(*job, **kwargs) for job in jobs
        )
    else:
        results = [fit_gbt_classifier(*job, **kwargs) for job in jobs]
    importance = np.stack([r[0] for r in results], axis=1)
    train_acc = np.array([r[1] for r in results])
    test_acc = np.array([r[2] for r in results])
    return importance, train_acc, test_acc

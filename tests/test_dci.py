"""DCI: scores from importance matrices by hand, behaviour on synthetic codes, input errors,
and agreement of the fast LightGBM backend with the reference sklearn classifier."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from factordiff.metrics.dci import (
    completeness_from_importance,
    dci,
    disentanglement_from_importance,
)
from factordiff.metrics.gbt import default_max_bin, fit_gbt_classifier, fit_gbt_per_factor
from factordiff.metrics.utils import MetricInputError

SHAPES3D_SIZES = (10, 10, 10, 8, 4, 15)


def synthetic_codes(
    kind: str,
    n_train: int,
    n_test: int,
    sizes: tuple[int, ...] = SHAPES3D_SIZES,
    n_codes: int = 20,
    noise: float = 0.04,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(codes_train, factors_train, codes_test, factors_test) from i.i.d. uniform factors.

    Each factor is scaled to [0, 1]; codes that carry nothing are N(0, 0.3^2).
    - "disentangled": code j = factor j + N(0, (noise/2)^2), the rest noise.
    - "mixed": code j = factor j + N(0, noise^2); 4 codes mix two factors (0.7 a + 0.5 b),
      3 are a sine of one factor, the rest noise.
    - "entangled": the disentangled codes under a random rotation of all ``n_codes``.
    """
    rs = np.random.RandomState(seed)
    n, nf = n_train + n_test, len(sizes)
    factors = np.stack([rs.randint(0, k, size=n) for k in sizes], axis=1)
    u = factors / (np.asarray(sizes) - 1.0)
    codes = 0.3 * rs.normal(size=(n, n_codes))
    if kind == "mixed":
        codes[:, :nf] = u + noise * rs.normal(size=(n, nf))
        for c in range(4):
            a, b = c % nf, (c + 1) % nf
            codes[:, nf + c] = 0.7 * u[:, a] + 0.5 * u[:, b] + 1.25 * noise * rs.normal(size=n)
        for c, a in enumerate((0, 3, 5)):
            codes[:, nf + 4 + c] = np.sin(3 * u[:, a % nf]) + 2.5 * noise * rs.normal(size=n)
    elif kind in ("disentangled", "entangled"):
        codes[:, :nf] = u + noise / 2 * rs.normal(size=(n, nf))
        if kind == "entangled":
            rotation, _ = np.linalg.qr(rs.normal(size=(n_codes, n_codes)))
            codes = codes @ rotation
    else:
        raise ValueError(kind)
    return codes[:n_train], factors[:n_train], codes[n_train:], factors[n_train:]


# --- scores from an importance matrix, computed by hand ---------------------------------


def test_identity_importance_scores_one():
    r = np.eye(4)
    assert disentanglement_from_importance(r) == pytest.approx(1.0, abs=1e-8)
    assert completeness_from_importance(r) == pytest.approx(1.0, abs=1e-8)


def test_uniform_importance_scores_zero():
    r = np.full((5, 3), 0.2)
    assert disentanglement_from_importance(r) == pytest.approx(0.0, abs=1e-12)
    assert completeness_from_importance(r) == pytest.approx(0.0, abs=1e-12)


def test_two_by_two_by_hand():
    # code 0 informs factor 0 only (score 1), code 1 both equally (score 0); code shares 1/3,
    # 2/3 -> D = 1/3. Factor 0 spread over both codes (0), factor 1 on code 1 only (1);
    # factor shares 2/3, 1/3 -> C = 1/3.
    r = np.array([[1.0, 0.0], [1.0, 1.0]])
    assert disentanglement_from_importance(r) == pytest.approx(1 / 3, abs=1e-9)
    assert completeness_from_importance(r) == pytest.approx(1 / 3, abs=1e-9)


def test_dead_code_does_not_lower_disentanglement():
    # code 0: (3/4, 1/4) -> 1 - H2 = 1 + 3/4 log2(3/4) + 1/4 log2(1/4); code 1 unused (share 0).
    r = np.array([[3.0, 1.0], [0.0, 0.0]])
    expected = 1 + 0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)
    assert disentanglement_from_importance(r) == pytest.approx(expected, abs=1e-9)
    assert completeness_from_importance(r) == pytest.approx(1.0, abs=1e-9)


def test_all_zero_importance_scores_zero_like_the_reference():
    r = np.zeros((4, 3))
    assert disentanglement_from_importance(r) == pytest.approx(0.0, abs=1e-12)
    assert completeness_from_importance(r) == pytest.approx(0.0, abs=1e-12)


def test_matches_reference_formula_on_random_matrices():
    rs = np.random.RandomState(0)
    for shape in [(20, 6), (3, 7), (2, 2)]:
        r = rs.rand(*shape) * (rs.rand(*shape) > 0.4)
        d_code = 1.0 - scipy.stats.entropy(r.T + 1e-11, base=shape[1])
        c_factor = 1.0 - scipy.stats.entropy(r + 1e-11, base=shape[0])
        d = np.sum(d_code * r.sum(axis=1) / r.sum())
        c = np.sum(c_factor * r.sum(axis=0) / r.sum())
        assert disentanglement_from_importance(r) == pytest.approx(d, abs=1e-12)
        assert completeness_from_importance(r) == pytest.approx(c, abs=1e-12)


def test_single_factor_or_code_scores_one_not_nan():
    r = np.array([[0.7], [0.3]])
    assert disentanglement_from_importance(r) == 1.0
    assert completeness_from_importance(r.T) == 1.0


def test_permuting_codes_leaves_scores_unchanged():
    r = np.random.RandomState(1).rand(8, 4)
    perm = np.random.RandomState(2).permutation(8)
    assert disentanglement_from_importance(r[perm]) == pytest.approx(
        disentanglement_from_importance(r), abs=1e-12
    )
    assert completeness_from_importance(r[perm]) == pytest.approx(
        completeness_from_importance(r), abs=1e-12
    )


def test_bad_importance_matrix_raises():
    with pytest.raises(MetricInputError):
        disentanglement_from_importance(np.array([[1.0, -0.5]]))
    with pytest.raises(MetricInputError):
        completeness_from_importance(np.ones(3))


# --- the metric on codes ---------------------------------------------------------------

SMALL_SIZES = (6, 4, 3)


@pytest.fixture(scope="module")
def small_disentangled():
    return synthetic_codes("disentangled", 1000, 500, sizes=SMALL_SIZES, n_codes=6, noise=0.1)


def test_disentangled_codes_score_high(small_disentangled):
    out = dci(*small_disentangled)
    assert out["backend"] == "lightgbm"
    assert out["importance_matrix"].shape == (6, 3)
    assert np.allclose(out["importance_matrix"].sum(axis=0), 1.0)
    assert out["disentanglement"] > 0.9
    assert out["completeness"] > 0.9
    assert out["informativeness_train"] > 0.9
    assert 0.5 < out["informativeness_test"] <= 1.0


def test_rotated_codes_score_clearly_lower(small_disentangled):
    straight = dci(*small_disentangled)
    codes = synthetic_codes("entangled", 1000, 500, sizes=SMALL_SIZES, n_codes=6, noise=0.1)
    rotated = dci(*codes)
    assert rotated["disentanglement"] < straight["disentanglement"] - 0.3
    assert rotated["completeness"] < straight["completeness"] - 0.3


def test_permuting_codes_leaves_dci_unchanged(small_disentangled):
    # Up to exact ties between codes, which both backends break by column order (sklearn: by
    # random_state): here a split worth 0.2% of one factor's importance changes code.
    c_tr, f_tr, c_te, f_te = small_disentangled
    perm = np.random.RandomState(3).permutation(c_tr.shape[1])
    a = dci(c_tr, f_tr, c_te, f_te)
    b = dci(c_tr[:, perm], f_tr, c_te[:, perm], f_te)
    assert b["disentanglement"] == pytest.approx(a["disentanglement"], abs=0.01)
    assert b["completeness"] == pytest.approx(a["completeness"], abs=0.01)
    assert b["informativeness_test"] == pytest.approx(a["informativeness_test"], abs=0.01)
    assert np.allclose(b["importance_matrix"], a["importance_matrix"][perm], atol=0.01)


def test_lightgbm_backend_is_deterministic(small_disentangled):
    a = dci(*small_disentangled, n_jobs=2)
    b = dci(*small_disentangled, n_jobs=1)
    assert np.array_equal(a["importance_matrix"], b["importance_matrix"])
    assert a["informativeness_test"] == b["informativeness_test"]


def test_input_errors(small_disentangled):
    c_tr, f_tr, c_te, f_te = small_disentangled
    with pytest.raises(MetricInputError, match="rows"):
        dci(c_tr, f_tr[:-1], c_te, f_te)
    with pytest.raises(MetricInputError, match="rows"):
        dci(c_tr, f_tr, c_te[:-1], f_te)
    bad = c_tr.copy()
    bad[3, 2] = np.nan
    with pytest.raises(MetricInputError, match="NaN"):
        dci(bad, f_tr, c_te, f_te)
    with pytest.raises(MetricInputError, match="2-D"):
        dci(c_tr[:, :, None], f_tr, c_te, f_te)
    with pytest.raises(MetricInputError, match="2-D"):
        dci(c_tr, f_tr[:, :, None], c_te, f_te)
    with pytest.raises(MetricInputError, match="codes"):
        dci(c_tr, f_tr, c_te[:, :-1], f_te)
    with pytest.raises(MetricInputError, match="factors"):
        dci(c_tr, f_tr, c_te, f_te[:, :-1])
    with pytest.raises(MetricInputError, match="backend"):
        dci(c_tr, f_tr, c_te, f_te, backend="xgboost")
    constant = f_tr.copy()
    constant[:, 1] = 2
    with pytest.raises(MetricInputError, match="single value"):
        dci(c_tr, constant, c_te, f_te)


# --- the per-factor classifier ---------------------------------------------------------


@pytest.mark.parametrize("backend", ["lightgbm", "sklearn"])
def test_gbt_labels_binary_and_unseen(backend):
    rs = np.random.RandomState(0)
    y = rs.choice([3, 7], size=300)
    x = np.stack([y + 0.5 * rs.normal(size=300), rs.normal(size=300)], axis=1)
    y_test = y.copy()
    y_test[:10] = 5  # a class never seen in training can never be predicted
    imp, acc_train, acc_test = fit_gbt_classifier(x[:200], y[:200], x, y_test, backend, seed=0)
    assert imp.shape == (2,) and imp.sum() == pytest.approx(1.0)
    assert imp[0] > imp[1]
    assert acc_train > 0.9
    assert acc_test <= 1 - 10 / 300


@pytest.mark.parametrize("backend", ["lightgbm", "sklearn"])
def test_gbt_constant_codes_predict_the_majority(backend):
    y = np.array([0] * 30 + [1] * 50 + [2] * 20)
    x = np.ones((100, 3))
    imp, acc_train, acc_test = fit_gbt_classifier(x, y, x, y, backend, seed=0)
    assert np.array_equal(imp, np.zeros(3))
    assert acc_train == acc_test == pytest.approx(0.5)


def test_gbt_lightgbm_follows_sklearn_on_discrete_codes():
    # With few distinct values per code LightGBM's bins are exact, so its trees (and leaf
    # values) follow sklearn's; only float32 gradients and ties can make them drift.
    rs = np.random.RandomState(1)
    y = rs.randint(0, 2, 900)
    x = np.round((y[:, None] / 2 + 0.3 * rs.normal(size=(900, 4))) * 8) / 8
    ref = fit_gbt_classifier(x[:600], y[:600], x[600:], y[600:], "sklearn", seed=0)
    fast = fit_gbt_classifier(x[:600], y[:600], x[600:], y[600:], "lightgbm")
    assert np.abs(ref[0] - fast[0]).max() < 2e-3
    assert fast[1] == pytest.approx(ref[1], abs=0.005)
    assert fast[2] == pytest.approx(ref[2], abs=0.005)


# --- agreement of the fast backend with the reference ----------------------------------

TOL = 0.02
KEYS = ("disentanglement", "completeness", "informativeness_train", "informativeness_test")


def _assert_agree(
    codes: tuple, n_jobs: int | None = None, ref: dict | None = None
) -> tuple[dict, dict]:
    fast = dci(*codes, backend="lightgbm", n_jobs=n_jobs)
    if ref is None:
        ref = dci(*codes, backend="sklearn", n_jobs=n_jobs, seed=0)
    for key in KEYS:
        assert abs(fast[key] - ref[key]) <= TOL, (key, fast[key], ref[key])
    return fast, ref


def test_default_bins_are_exact_for_small_samples():
    assert default_max_bin(100) == 255
    assert default_max_bin(1500) == 1500  # one bin per distinct value: sklearn's splits
    assert default_max_bin(10000) == 255  # the protocol size: 255 bins, within 0.005


@pytest.fixture(scope="module")
def small_mixed():
    """Codes and the reference's scores (sklearn, seed 0) for the small agreement tests."""
    codes = synthetic_codes("mixed", 1500, 750, sizes=(6, 4, 3), n_codes=10, noise=0.12)
    return codes, dci(*codes, backend="sklearn", n_jobs=2, seed=0)


def test_lightgbm_agrees_with_sklearn_small(small_mixed):
    codes, ref = small_mixed
    _assert_agree(codes, n_jobs=2, ref=ref)


def test_lightgbm_agrees_with_sklearn_with_255_bins(small_mixed):
    # The binned mode (used above 5000 points) on a small sample, where binning costs most.
    codes, ref = small_mixed
    imp, _, acc = fit_gbt_per_factor(*codes, n_jobs=2, max_bin=255)
    assert abs(disentanglement_from_importance(imp) - ref["disentanglement"]) <= TOL
    assert abs(completeness_from_importance(imp) - ref["completeness"]) <= TOL
    assert abs(acc.mean() - ref["informativeness_test"]) <= TOL


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mixed", "disentangled", "entangled"])
def test_lightgbm_agrees_with_sklearn_shapes3d_size(kind):
    """10000 / 5000 points, Shapes3D factor sizes, 20 codes (minutes: the sklearn fit)."""
    fast, ref = _assert_agree(synthetic_codes(kind, 10000, 5000), n_jobs=-1)
    print(kind, {k: (round(fast[k], 4), round(ref[k], 4)) for k in KEYS})

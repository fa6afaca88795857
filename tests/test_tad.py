"""TAD (NashAE's Total AUROC Difference): AUROC values, gap, capture filter, input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from factordiff.metrics.tad import _auroc_exact, auroc_matrix, entropy_reduction, tad
from factordiff.metrics.utils import MetricInputError, entropy, mutual_info


def _noisy_codes(attrs: np.ndarray, sigma: float, rs: np.random.RandomState) -> np.ndarray:
    return attrs.astype(float) + sigma * rs.randn(*attrs.shape)


def test_exact_auroc_equals_sklearn_with_ties() -> None:
    """The rank formula must give roc_auc_score's values, ties included (rounded codes)."""
    rs = np.random.RandomState(0)
    y = rs.randint(0, 2, (500, 4))
    z = np.round(rs.randn(500, 6) + 0.7 * y[:, [0, 1, 2, 3, 0, 1]], 1)
    raw = _auroc_exact(z, y)
    both = auroc_matrix(z, y)
    for i in range(y.shape[1]):
        for j in range(z.shape[1]):
            ref = roc_auc_score(y[:, i], z[:, j])
            assert raw[i, j] == pytest.approx(ref, abs=1e-12)
            ref_both = max(ref, roc_auc_score(y[:, i], -z[:, j]))
            assert both[i, j] == pytest.approx(ref_both, abs=1e-12)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_auroc_matches_gaussian_theory(sigma: float) -> None:
    """code = a + N(0, sigma^2): AUROC = P(1 + s e1 > s e0) = Phi(1 / (sigma sqrt 2))."""
    rs = np.random.RandomState(1)
    y = rs.randint(0, 2, (20000, 1))
    z = _noisy_codes(y, sigma, rs)
    expected = norm.cdf(1.0 / (sigma * math.sqrt(2.0)))
    assert auroc_matrix(z, y)[0, 0] == pytest.approx(expected, abs=0.01)
    # the other sign: a - noise has the same AUROC once both signs are taken
    assert auroc_matrix(-z, y)[0, 0] == pytest.approx(expected, abs=0.01)


def test_perfect_capture_scores_half_per_attribute() -> None:
    """Both signs count, so the second-best AUROC is >= 0.5 and a gap is at most 0.5:
    a perfect code set scores about 0.5 x n_attributes, all captured."""
    rs = np.random.RandomState(2)
    k = 5
    y = rs.randint(0, 2, (10000, k))
    z = np.concatenate([_noisy_codes(y, 0.01, rs), rs.randn(10000, 3)], axis=1)
    names = [f"attr{i}" for i in range(k)]
    r = tad(z, y, attribute_names=names)
    assert r["n_captured"] == k
    assert r["captured"] == names
    assert r["captured_indices"] == list(range(k))
    assert 0.48 * k < r["tad"] <= 0.5 * k
    assert r["best_code"] == list(range(k))
    assert all(g > 0.48 for g in r["auroc_gap"])
    assert r["n_samples"] == 10000 and r["n_codes"] == k + 3 and r["n_attributes"] == k
    assert r["skipped"] == [] and r["excluded_correlated"] == []


def test_sign_flip_does_not_change_tad() -> None:
    rs = np.random.RandomState(3)
    y = rs.randint(0, 2, (4000, 3))
    z = np.concatenate([_noisy_codes(y, 0.6, rs), rs.randn(4000, 2)], axis=1)
    flipped = z.copy()
    flipped[:, [0, 3]] *= -1
    a, b = tad(z, y), tad(flipped, y)
    assert b["tad"] == pytest.approx(a["tad"], abs=1e-12)
    np.testing.assert_allclose(np.array(b["auroc"]), np.array(a["auroc"]), atol=1e-12)


def test_two_codes_for_one_attribute_leave_no_gap() -> None:
    rs = np.random.RandomState(4)
    y = rs.randint(0, 2, (10000, 1))
    z = np.concatenate([_noisy_codes(y, 0.3, rs), _noisy_codes(y, 0.3, rs)], axis=1)
    r = tad(z, y)
    assert r["best_auroc"][0] > 0.9
    assert r["n_captured"] == 1  # captured (best >= 0.75) but worth nearly nothing
    assert r["auroc_gap"][0] < 0.01
    # an exact copy of the code: both AUROCs equal, gap exactly 0
    r2 = tad(np.concatenate([z[:, :1], z[:, :1]], axis=1), y)
    assert r2["auroc_gap"][0] == 0.0 and r2["tad"] == 0.0


def test_strongly_correlated_attributes_are_excluded() -> None:
    """B copies A with 5% flips: each reduces the other's entropy by > 20%, so both are
    left out even though each has its own perfect code. A 35%-flip pair stays in."""
    rs = np.random.RandomState(5)
    n = 20000
    a = rs.randint(0, 2, n)
    b = np.where(rs.rand(n) < 0.05, 1 - a, a)
    c = rs.randint(0, 2, n)
    d = np.where(rs.rand(n) < 0.35, 1 - c, c)
    y = np.stack([a, b, c, d], axis=1)
    z = _noisy_codes(y, 0.01, rs)
    r = tad(z, y, attribute_names=["a", "b", "c", "d"])
    assert r["excluded_correlated"] == ["a", "b"]
    assert r["captured"] == ["c", "d"]
    assert r["tad"] == pytest.approx(sum(r["auroc_gap"][2:]), abs=1e-12)
    ratio_a = mutual_info(a, b) / entropy(a[:, None])[0]
    assert r["entropy_reduction"][0] == pytest.approx(ratio_a, rel=1e-12)
    assert ratio_a > 0.2 and r["entropy_reduction"][2] < 0.2
    # the threshold is inclusive ("<= 0.2") and configurable
    loose = tad(z, y, entropy_reduction_threshold=1.0)
    assert loose["n_captured"] == 4


def test_plus_minus_one_labels_equal_zero_one() -> None:
    rs = np.random.RandomState(6)
    y = rs.randint(0, 2, (3000, 3))
    z = np.concatenate([_noisy_codes(y, 0.5, rs), rs.randn(3000, 2)], axis=1)
    a, b = tad(z, y), tad(z, 2 * y - 1)
    assert a["tad"] == b["tad"] and a["captured"] == b["captured"]
    assert tad(z, y.astype(bool))["tad"] == a["tad"]


def test_constant_attribute_is_skipped_with_a_note() -> None:
    rs = np.random.RandomState(7)
    y = rs.randint(0, 2, (2000, 3))
    y[:, 1] = 0
    z = np.concatenate([_noisy_codes(y, 0.1, rs), rs.randn(2000, 1)], axis=1)
    r = tad(z, y, attribute_names=["x", "const", "w"])
    assert r["skipped"][0]["attribute"] == "const"
    assert "constant" in r["skipped"][0]["reason"]
    assert r["auroc_gap"][1] is None and r["auroc"][1] is None
    assert r["entropy_reduction"][1] is None
    assert r["captured"] == ["x", "w"]
    assert any("skipped" in note for note in r["notes"])


def _sweep_oracle(z: np.ndarray, y: np.ndarray, k: int) -> float:
    """Plain-loop statement of the official sweep: both directions, right Riemann sum."""
    lo, hi = z.min(), z.max()
    p, q = y.sum(), len(y) - y.sum()
    areas = []
    for positive in (True, False):
        pts = []
        for t in np.linspace(0, 1, k):
            thr = t * (hi - lo) + lo
            pred = z >= thr if positive else z < thr
            pts.append((np.sum(pred & (y == 0)) / q, np.sum(pred & (y == 1)) / p))
        fpr = sorted(f for f, _ in pts)
        tpr = sorted(t for _, t in pts)
        areas.append(sum(tpr[i + 1] * (fpr[i + 1] - fpr[i]) for i in range(k - 1)))
    return max(areas)


def test_sweep_auroc_matches_loop_and_converges_to_exact() -> None:
    rs = np.random.RandomState(8)
    y = rs.randint(0, 2, (3000, 2))
    z = np.concatenate([_noisy_codes(y, 0.8, rs), rs.randn(3000, 1)], axis=1)
    sweep = auroc_matrix(z, y, method="sweep", n_thresholds=11)
    for i in range(2):
        for j in range(3):
            assert sweep[i, j] == pytest.approx(_sweep_oracle(z[:, j], y[:, i], 11), abs=1e-12)
    exact = auroc_matrix(z, y)
    assert np.all(sweep >= exact - 1e-3)  # right sums sit above the monotone ROC
    fine = auroc_matrix(z, y, method="sweep", n_thresholds=2001)
    np.testing.assert_allclose(fine, exact, atol=2e-3)
    r = tad(z, y, auroc="sweep", n_thresholds=101)
    assert r["auroc_method"] == "sweep" and r["n_thresholds"] == 101


def test_min_code_range_marks_dead_codes() -> None:
    rs = np.random.RandomState(9)
    y = rs.randint(0, 2, (2000, 1))
    z = np.concatenate([0.01 * _noisy_codes(y, 0.1, rs), rs.randn(2000, 1)], axis=1)
    assert auroc_matrix(z, y)[0, 0] > 0.99
    assert auroc_matrix(z, y, min_code_range=0.2)[0, 0] == 0.5


def test_entropy_reduction_single_attribute_is_zero() -> None:
    y = np.array([[0], [1], [1], [0]])
    assert entropy_reduction(y).tolist() == [0.0]


@pytest.mark.parametrize(
    ("codes", "attrs", "kwargs", "match"),
    [
        (np.zeros((10, 3)), np.zeros((9, 2)), {}, "rows"),
        (np.zeros((10, 3)), np.full((10, 2), 2), {}, "column 0"),
        (np.zeros((10, 1)), np.zeros((10, 2)), {}, "at least 2 codes"),
        (np.zeros((10, 3)), np.zeros((10, 2)), {"attribute_names": ["a"]}, "names"),
        (np.zeros((10, 3)), np.zeros((10, 2)), {"auroc": "trapz"}, "exact"),
    ],
)
def test_input_errors(codes: np.ndarray, attrs: np.ndarray, kwargs: dict, match: str) -> None:
    with pytest.raises(MetricInputError, match=match):
        tad(codes, attrs, **kwargs)


def test_bad_attribute_values_name_the_column() -> None:
    rs = np.random.RandomState(10)
    z = rs.randn(20, 3)
    y = rs.randint(0, 2, (20, 3))
    bad = y.copy()
    bad[4, 2] = 3
    with pytest.raises(MetricInputError, match=r"column 2 \('Smiling'\)"):
        tad(z, bad, attribute_names=["Bald", "Male", "Smiling"])
    mixed = y.copy()
    mixed[:, 0] = 2 * mixed[:, 0] - 1  # column 0 in {-1, 1}, the others in {0, 1}
    with pytest.raises(MetricInputError, match=r"column 1.*another column holds -1"):
        tad(z, mixed)
    nan = y.astype(float)
    nan[3, 1] = np.nan
    with pytest.raises(MetricInputError, match="column 1 contains NaN"):
        tad(z, nan)
    z_nan = z.copy()
    z_nan[5, 0] = np.nan
    with pytest.raises(MetricInputError, match="NaN"):
        tad(z_nan, y)

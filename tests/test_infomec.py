"""InfoMEC: agreement with the reference (kylehkhsu/tripod) and known answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import factordiff as fd
from factordiff.metrics.infomec import infomec
from factordiff.metrics.utils import MetricInputError, sample_codes
from metric_cases import MetricTinyGrid, case, quantised, represent_mixed

REFERENCE = json.loads((Path(__file__).parent / "fixtures" / "infomec_reference.json").read_text())
SCORES = ("infom", "infoe", "infoc")


def _params(kind: str) -> list:
    keys = REFERENCE[kind]
    return [pytest.param(k, marks=pytest.mark.slow) if k.endswith("/full") else k for k in keys]


@pytest.mark.parametrize("key", _params("continuous"))
def test_continuous_latents_match_the_reference(key: str) -> None:
    ref = REFERENCE["continuous"][key]
    codes, factors = case(key)[:2]
    out = infomec(codes, factors)
    for score in SCORES:
        assert out[score] == pytest.approx(ref[score], abs=1e-6), score
    np.testing.assert_allclose(out["nmi"], ref["nmi"], atol=1e-6)
    assert out["active_latents"].tolist() == ref["active_latents"]


@pytest.mark.parametrize("key", _params("discrete"))
def test_discrete_latents_match_the_reference(key: str) -> None:
    ref = REFERENCE["discrete"][key]
    codes, factors = case(key)[:2]
    out = infomec(quantised(codes), factors, discrete_latents=True)
    for score in SCORES:
        assert out[score] == pytest.approx(ref[score], abs=1e-6), score
    np.testing.assert_allclose(out["nmi"], ref["nmi"], atol=1e-6)
    assert out["active_latents"].tolist() == ref["active_latents"]


def _factors(n: int = 2000, sizes=(5, 4, 3), seed: int = 0) -> np.ndarray:
    rs = np.random.RandomState(seed)
    return np.stack([rs.randint(s, size=n) for s in sizes], axis=1)


def _perfect(factors: np.ndarray, seed: int = 1) -> np.ndarray:
    return factors + 0.05 * np.random.RandomState(seed).randn(*factors.shape)


def test_perfect_codes_score_about_one_and_a_rotation_lower() -> None:
    factors = _factors()
    codes = _perfect(factors)
    perfect = infomec(codes, factors)
    assert perfect["infom"] > 0.95 and perfect["infoc"] > 0.95 and perfect["infoe"] > 0.95
    q, _ = np.linalg.qr(np.random.RandomState(2).randn(3, 3))
    rotated = infomec(codes @ q, factors)
    assert rotated["infom"] < perfect["infom"] - 0.2
    assert rotated["infoc"] < perfect["infoc"] - 0.2
    assert rotated["infoe"] > 0.9  # a linear readout sees through a rotation


def test_permuting_codes_or_factors_changes_nothing() -> None:
    factors = _factors()
    rs = np.random.RandomState(3)
    codes = _perfect(factors) @ rs.randn(3, 3) + 0.3 * rs.randn(len(factors), 3)
    base = infomec(codes, factors)
    by_codes = infomec(codes[:, [2, 0, 1]], factors)
    by_factors = infomec(codes, factors[:, [1, 2, 0]])
    for score in SCORES:
        assert by_codes[score] == pytest.approx(base[score], abs=1e-6)
        assert by_factors[score] == pytest.approx(base[score], abs=1e-6)
    np.testing.assert_allclose(by_codes["nmi"], base["nmi"][:, [2, 0, 1]], atol=1e-9)


def test_discrete_perfect_codes_and_inactive_latents() -> None:
    factors = _factors()
    codes = np.concatenate([factors.astype(float), np.zeros((len(factors), 1))], axis=1)
    out = infomec(codes, factors, discrete_latents=True)
    assert out["active_latents"].tolist() == [True, True, True, False]
    # the plug-in MI between a factor and another factor's code is not exactly 0 on a sample
    assert out["infom"] > 0.99 and out["infoc"] > 0.99 and out["infoe"] > 0.99


def test_degenerate_inputs() -> None:
    factors = _factors()
    codes = _perfect(factors)
    one_active = np.concatenate([codes[:, :1], 1e-3 * codes[:, 1:]], axis=1)
    assert np.isnan(infomec(one_active, factors)["infoc"])  # 1 - 1/L = 0, as the reference
    none = infomec(np.zeros((len(factors), 2)), factors)
    assert (none["infom"], none["infoe"], none["infoc"]) == (0.0, 0.0, 0.0)
    with pytest.raises(MetricInputError, match="at least 2 factors"):
        infomec(codes, factors[:, :1])
    constant = factors.copy()
    constant[:, 1] = 0
    with pytest.raises(MetricInputError, match=r"factor column\(s\) \[1\]"):
        infomec(codes, constant)
    with pytest.raises(MetricInputError, match="rows"):
        infomec(codes[:10], factors)


def test_exported_and_run_by_evaluate_on_the_shared_points() -> None:
    """Inside ``evaluate`` InfoMEC sees the points DCI/MIG see (the DyGA evaluation's)."""
    assert fd.metrics.infomec is infomec
    ds = MetricTinyGrid()
    out = fd.metrics.evaluate(represent_mixed, ds, ["infomec"], scale=0.05, progress=False)
    assert out["protocol"]["sizes"]["infomec"] == {"num_train": 500}
    codes, factors = sample_codes(represent_mixed, ds, 500, np.random.RandomState(0))
    expected = infomec(codes, factors)
    for score in SCORES:
        assert out["infomec"][score] == expected[score]
    assert set(fd.metrics.headline(out)) == {"infomec/infom", "infomec/infoe", "infomec/infoc"}

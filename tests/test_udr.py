"""UDR: disentanglement_lib's numbers on fixed runs, and the answers the definition implies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from factordiff.metrics import MetricInputError, udr
from factordiff.metrics.udr import relative_strength
from metric_cases import udr_runs

REFERENCE = json.loads((Path(__file__).parent / "fixtures" / "udr_reference.json").read_text())


@pytest.mark.parametrize("case", sorted(REFERENCE["cases"]))
def test_matches_disentanglement_lib(case: str) -> None:
    runs, kl = udr_runs()
    correlation, filtered = case.split("_filter")
    ours = udr(runs, kl=kl, correlation=correlation, filter_inactive=filtered == "True")
    ref = REFERENCE["cases"][case]
    np.testing.assert_allclose(ours["scores"], ref["scores"], atol=1e-9)
    np.testing.assert_allclose(ours["pairwise"], ref["pairwise"], atol=1e-9)


def test_relative_strength_known_matrices() -> None:
    assert relative_strength(np.eye(3)) == 1.0
    assert relative_strength(np.ones((3, 3))) == pytest.approx(1 / 3)
    assert relative_strength(np.zeros((3, 3))) == 0.0
    assert relative_strength(np.zeros((0, 3))) == 0.0  # no active unit on one side


def test_identical_runs_score_high_and_a_rotation_lower() -> None:
    rs = np.random.RandomState(0)
    f = rs.uniform(-1, 1, (1000, 6))
    q, _ = np.linalg.qr(rs.normal(size=(6, 6)))
    same = [f + 0.01 * rs.normal(size=f.shape) for _ in range(3)]
    rotated = f @ q
    for correlation in ("lasso", "spearman"):
        out = udr([*same, rotated], correlation=correlation)
        assert min(out["scores"][:3]) > 0.85, out["scores"]
        assert out["scores"][3] < min(out["scores"][:3]) - 0.3, out["scores"]


def test_a_deterministic_code_with_a_constant_unit_is_filtered() -> None:
    rs = np.random.RandomState(1)
    f = rs.uniform(-1, 1, (500, 4))
    dead = np.c_[f[:, :3], np.full(500, 0.3)]  # unit 3 carries nothing
    out = udr([dead, dead[:, [2, 0, 1, 3]] * -2.0])
    assert out["active"][0] == [True, True, True, False]
    # Lasso (alpha 0.1) shrinks each weight of a perfect match on standardised units to 0.9,
    # so a permutation scores 0.9^2 / 0.9 = 0.9 (disentanglement_lib's own test: 0.8-1.0)
    assert out["scores"] == pytest.approx([0.9, 0.9], abs=1e-6)
    spearman = udr([dead, dead[:, [2, 0, 1, 3]] * -2.0], correlation="spearman")
    # chance rank correlations of ~0.04 between independent units of 500 points cost a little
    assert 0.85 < spearman["scores"][0] < 1.0 and spearman["active"][1][3] is False
    assert "standard deviation" in out["activity_rule"]


def test_runs_may_have_different_unit_counts() -> None:
    rs = np.random.RandomState(2)
    f = rs.uniform(-1, 1, (500, 4))
    out = udr([f, np.c_[f, rs.uniform(-1, 1, 500)]])
    assert len(out["scores"]) == 2 and np.array(out["similarity"][0][1]).shape == (4, 5)


def test_bad_input_is_named() -> None:
    a = np.zeros((10, 3)) + np.arange(10)[:, None]
    with pytest.raises(MetricInputError, match="at least 2"):
        udr([a])
    with pytest.raises(MetricInputError, match="same images"):
        udr([a, a[:5]])
    with pytest.raises(MetricInputError, match="correlation"):
        udr([a, a], correlation="pearson")
    with pytest.raises(MetricInputError, match=r"kl\[1\]"):
        udr([a, a], kl=[np.ones(3), np.ones(2)])

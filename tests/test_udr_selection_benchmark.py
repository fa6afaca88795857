"""benchmarks/udr_selection.py: the rank correlation and its interval are the textbook ones."""

from __future__ import annotations

import numpy as np
import pytest

BENCHMARK = "udr_selection"  # the ``bench`` fixture (conftest.py) imports it


def test_rank_correlation_and_its_fisher_interval(bench) -> None:
    out = bench.rank_correlation([1, 2, 3, 4, 5, 6, 7], [2, 1, 4, 3, 6, 5, 7])
    rho = 1 - 6 * 6 / (7 * 48)  # six ranks off by one: sum d^2 = 6
    assert out["rho"] == pytest.approx(rho)
    half = 1.96 * 1.06 / np.sqrt(4)
    assert out["ci95"] == pytest.approx([np.tanh(np.arctanh(rho) - half),
                                         np.tanh(np.arctanh(rho) + half)])  # fmt: skip
    few = bench.rank_correlation([1, 2, 3], [3, 2, 1])
    assert few["rho"] == pytest.approx(-1.0) and all(x != x for x in few["ci95"])

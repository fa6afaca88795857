"""Shared fixtures."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench(request: pytest.FixtureRequest):
    """The benchmark script the test module names in ``BENCHMARK``, imported as a module
    (benchmarks import each other by name, so their folder is on the path meanwhile)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module(request.module.BENCHMARK)
    finally:
        sys.path.remove(str(BENCHMARKS))

"""Shared fixtures."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One worker per core (pytest -n): PyTorch's default of one thread per core in every
    # worker would put two threads on each core, and OpenMP threads that wait for each
    # other then run 20-70x slower. Subprocesses a test starts inherit the count.
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
#: workers of ``pytest -n auto`` at most: each holds torch and the models of its tests (~1 GB)
MAX_WORKERS = 8


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """One worker per core this process may use (CI: 2), at most ``MAX_WORKERS``;
    ``PYTEST_XDIST_AUTO_NUM_WORKERS`` overrides."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return int(os.environ["PYTEST_XDIST_AUTO_NUM_WORKERS"])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, MAX_WORKERS))


@pytest.fixture(scope="module")
def bench(request: pytest.FixtureRequest):
    """The benchmark script the test module names in ``BENCHMARK``, imported as a module
    (benchmarks import each other by name, so their folder is on the path meanwhile)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module(request.module.BENCHMARK)
    finally:
        sys.path.remove(str(BENCHMARKS))

"""Shared checks of the published-file loader tests: what a build cost, refusing pickles,
truncated copies."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MB = 1 << 20


@dataclass
class Built:
    """A dataset built from a written file, with what the build cost."""

    root: Path
    dataset: Any
    markers: dict[int, np.ndarray]
    build_peak: int


def traced(build: Callable[[], Any]) -> tuple[Any, int]:
    """The built object and the peak Python memory of building it (no wall-clock time:
    timings live in benchmarks/published_loaders.py, never in tests)."""
    tracemalloc.start()
    try:
        result = build()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


def refuse_pickle(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("a loader unpickled data from the file")


def truncated_copy(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]

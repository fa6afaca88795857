"""Published-file loaders: seconds to write each stand-in file and to build the dataset
from it (first open, then a reopen that reuses the cache), with peak Python memory.

The stand-ins are the test suite's writers (``tests/published_files.py``): the published
layout with mostly-zero images, so this times the loaders' own work (parsing, packing the
cache, memory-mapping), not the disk. These timings were asserted in tests once; a
wall-clock bound fails on a slower or busier machine, so they live here.

    python benchmarks/published_loaders.py [--out benchmarks/results/published_loaders.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import published_files as pf  # noqa: E402
from factordiff.data.cars3d import Cars3D  # noqa: E402
from factordiff.data.dsprites_file import DSpritesFile  # noqa: E402
from factordiff.data.mpi3d import MPI3DToy  # noqa: E402
from factordiff.data.shapes3d_file import Shapes3DFile  # noqa: E402

MB = 2**20

#: name -> (write the stand-in under root, build the dataset from root)
CASES: dict[str, tuple[Callable[[Path], object], Callable[[Path], object]]] = {
    "dsprites": (lambda r: pf.write_dsprites(r / pf.DSPRITES_FILE), DSpritesFile),
    "shapes3d": (lambda r: pf.write_shapes3d(r / "3dshapes.h5"), Shapes3DFile),
    "mpi3d_toy": (lambda r: pf.write_mpi3d(r / "mpi3d_toy.npz"), MPI3DToy),
    "cars3d": (lambda r: pf.write_cars3d(r / "data" / "cars"), Cars3D),
}


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Seconds and peak Python memory (MiB) of one call."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return time.perf_counter() - start, peak / MB


def measure(name: str) -> dict:
    write, build = CASES[name]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_s, _ = _timed(lambda: write(root))
        build_s, build_mib = _timed(lambda: build(root))
        reopen_s, reopen_mib = _timed(lambda: build(root))
    return {
        "dataset": name,
        "write_s": write_s,
        "build_s": build_s,
        "build_peak_mib": build_mib,
        "reopen_s": reopen_s,
        "reopen_peak_mib": reopen_mib,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/published_loaders.json"
    )
    args = parser.parse_args()
    rows = [measure(name) for name in CASES]
    print("| dataset | write s | build s | build peak MiB | reopen s | reopen peak MiB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['dataset']} | {r['write_s']:.2f} | {r['build_s']:.2f} | "
            f"{r['build_peak_mib']:.1f} | {r['reopen_s']:.3f} | {r['reopen_peak_mib']:.1f} |"
        )
    machine = {
        "machine": platform.machine(),
        "processor": platform.processor(),
        "python": platform.python_version(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

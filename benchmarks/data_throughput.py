"""Data throughput: images/s for each dataset, raw ``images_at`` and through the DataLoader.

Procedural datasets always run; a published dataset runs when its files are found under
``--root DIR/<name>`` or ``$FACTORDIFF_DATA/<name>``. Prints a table and writes JSON.

    python benchmarks/data_throughput.py [--root DIR] [--batch 256] [--seconds 3] [--out F]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

import factordiff as fd
from factordiff.data.loader import make_loader
from factordiff.data.registry import DATASETS


def _rate(fn, seconds: float) -> float:
    """Images per second of ``fn`` (which returns how many images it made)."""
    fn()  # warm-up: caches, first file reads
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        done += fn()
    return done / (time.perf_counter() - start)


def measure(ds, batch: int, seconds: float, workers: int) -> dict:
    rng = np.random.default_rng(0)

    def raw() -> int:
        return len(ds.images_at(rng.integers(0, len(ds), size=batch)))

    loader = make_loader(ds, batch, seed=0, num_workers=workers)
    it = iter(loader)

    def torch_path() -> int:
        nonlocal it
        try:
            return len(next(it)["image"])
        except StopIteration:
            it = iter(loader)
            return len(next(it)["image"])

    return {
        "dataset": ds.name,
        "images": len(ds),
        "image_shape": list(ds.image_shape),
        "images_per_s_raw": round(_rate(raw, seconds), 1),
        f"images_per_s_loader_{workers}w": round(_rate(torch_path, seconds), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=os.environ.get("FACTORDIFF_DATA"))
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/data_throughput.json"))
    args = parser.parse_args()

    rows = []
    for spec in DATASETS.values():
        if spec.procedural:
            ds = fd.data.load(spec.name)
        elif args.root and (Path(args.root) / spec.name).is_dir():
            ds = fd.data.load(spec.name, root=Path(args.root) / spec.name)
        else:
            continue
        rows.append(measure(ds, args.batch, args.seconds, args.workers))
        print(rows[-1], flush=True)

    key = f"images_per_s_loader_{args.workers}w"
    loader_col = f"images/s (DataLoader, {args.workers} workers)"
    print(f"\n| dataset | images | shape | images/s (images_at) | {loader_col} |")
    print("|---|---|---|---|---|")
    for r in rows:
        shape = "x".join(map(str, r["image_shape"]))
        raw, loaded = r["images_per_s_raw"], r[key]
        print(f"| {r['dataset']} | {r['images']:,} | {shape} | {raw:,.0f} | {loaded:,.0f} |")
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"machine": machine, "batch": args.batch, "rows": rows}, indent=2)
    )
    print(f"\nmachine: {machine}; wrote {args.out}")


if __name__ == "__main__":
    main()

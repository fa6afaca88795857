"""HDDC fit time and log-likelihood against scikit-learn's GaussianMixture.

Data: n points in D dimensions from K Gaussians whose covariances have a few strong
directions and isotropic noise (the structure HDDC models). Both start from the same
k-means partition and run the same number of EM iterations; we report wall time and the
mean log-likelihood per point. Prints a table and writes JSON.

    python benchmarks/hddc.py [--n 100000] [--dim 32] [--k 8] [--iters 30]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.mixture import GaussianMixture

from factordiff.models.hddc import HDDC, kmeans_labels


def make_data(n: int, dim: int, k: int, seed: int = 0) -> np.ndarray:
    rs = np.random.RandomState(seed)
    parts = []
    for _c in range(k):
        basis, _ = np.linalg.qr(rs.randn(dim, dim))
        var = np.r_[rs.uniform(4, 10, 3), np.full(dim - 3, 0.3)]
        parts.append((rs.randn(n // k, dim) * np.sqrt(var)) @ basis.T + rs.randn(dim) * 6)
    return np.vstack(parts)


def row(method: str, seconds: float, mean_loglik: float, iterations: int) -> dict:
    return {"method": method, "seconds": round(seconds, 3), "mean_loglik": mean_loglik,
            "iterations": iterations}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "hddc.json")
    args = parser.parse_args()
    x = make_data(args.n, args.dim, args.k)
    labels = kmeans_labels(torch.tensor(x)[None], args.k, torch.Generator().manual_seed(0))[
        0
    ].numpy()
    means = np.stack([x[labels == c].mean(0) for c in range(args.k)])
    rows = []
    for model in ("AkjBkQkDk", "full"):
        for dtype in (torch.float64, torch.float32):
            start = time.perf_counter()
            fit = HDDC(
                args.k, model=model, init=labels, max_iter=args.iters, tol=0.0, dtype=dtype
            ).fit(x)
            seconds = time.perf_counter() - start
            name = f"factordiff HDDC {model} {str(dtype)[6:]}"
            rows.append(row(name, seconds, fit.score(x), fit.n_iter_))
    start = time.perf_counter()
    gm = GaussianMixture(
        args.k, means_init=means, max_iter=args.iters, tol=0.0, reg_covar=1e-6
    ).fit(x)
    seconds = time.perf_counter() - start
    rows.append(row("sklearn GaussianMixture full float64", seconds, gm.score(x), gm.n_iter_))
    machine = {
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    print(f"n={args.n} dim={args.dim} k={args.k} iters={args.iters} {machine}")
    for r in rows:
        print(f"{r['method']:<40} {r['seconds']:8.2f} s   mean loglik {r['mean_loglik']:.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"args": vars(args) | {"out": str(args.out)}, "machine": machine, "rows": rows},
            indent=1,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

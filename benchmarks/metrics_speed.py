"""Metric speed: DCI backends, and the full-protocol evaluation of the shipped model.

``--eval-shipped``: ``factordiff eval quickstart`` at the full protocol (what
``fd.metrics.evaluate`` does for it), timed end to end (model load included) with the
cached codes (each distinct image encoded once; the default) and, with ``--uncached``,
with every sampled image encoded as before; every score is compared with the shipped
``eval.json`` (a difference is printed and recorded). Writes
``benchmarks/results/metrics_speed_eval.json``.

DCI (the default mode): the LightGBM backend against the reference sklearn classifier.

Shapes3D factor sizes (10, 10, 10, 8, 4, 15), 10000 training / 5000 test points, 20 codes,
three kinds of codes (disentangled, partly mixed, entangled by a random rotation; see
``synthetic_codes`` in tests/test_dci.py). Prints a markdown table with the time and D/C/I
of each backend side by side and writes JSON (with the machine: CPU model, cores, load).
The sklearn reference takes about 4 minutes per kind on one core.

    python benchmarks/metrics_speed.py [--kinds mixed,...] [--n-train 10000] [--n-test 5000]
        [--n-jobs 1] [--out benchmarks/results/metrics_speed.json]
    python benchmarks/metrics_speed.py --eval-shipped [--uncached]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import lightgbm
import numpy as np
import sklearn

from factordiff.metrics.dci import dci

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_dci import SHAPES3D_SIZES, synthetic_codes  # noqa: E402

KEYS = {
    "disentanglement": "D",
    "completeness": "C",
    "informativeness_train": "I train",
    "informativeness_test": "I test",
}


def machine_info() -> dict:
    model = platform.processor() or platform.machine()
    cores_per_socket = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("", platform.machine()):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("cpu cores") and cores_per_socket is None:
                cores_per_socket = int(line.split(":", 1)[1])
    except OSError:
        pass
    return {
        "cpu": model,
        "logical_cpus": os.cpu_count(),
        "cpu_cores": cores_per_socket,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "lightgbm": lightgbm.__version__,
    }


def run(kind: str, n_train: int, n_test: int, n_jobs: int) -> dict:
    codes = synthetic_codes(kind, n_train, n_test)
    row: dict = {
        "kind": kind,
        "n_train": n_train,
        "n_test": n_test,
        "n_codes": codes[0].shape[1],
        "factor_sizes": list(SHAPES3D_SIZES),
    }
    for backend in ("lightgbm", "sklearn"):
        load = os.getloadavg()[0]
        start = time.perf_counter()
        out = dci(*codes, backend=backend, n_jobs=n_jobs)
        row[backend] = {
            "seconds": round(time.perf_counter() - start, 2),
            "load_before": round(load, 2),
            **{key: round(out[key], 4) for key in KEYS},
        }
        print(kind, backend, row[backend], flush=True)
    row["speedup"] = round(row["sklearn"]["seconds"] / row["lightgbm"]["seconds"], 1)
    row["max_abs_diff"] = round(max(abs(row["lightgbm"][k] - row["sklearn"][k]) for k in KEYS), 4)
    return row


def _differences(ours: dict, shipped: dict, path: str = "") -> list[str]:
    """Paths where two result trees differ (timings and the protocol record ignored)."""
    out = []
    for key in sorted(set(ours) | set(shipped)):
        if key in ("seconds", "protocol"):
            continue
        where = f"{path}/{key}" if path else key
        a, b = ours.get(key), shipped.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, where)
        elif a != b:
            out.append(f"{where}: {a!r} != {b!r}" if not isinstance(a, list) else where)
    return out


def eval_shipped(uncached: bool, out: Path) -> None:
    import factordiff as fd
    from factordiff.metrics.evaluate import results_to_json
    from factordiff.shipped import resolve_model

    shipped = json.loads((resolve_model(Path("quickstart")) / "eval.json").read_text())
    rows = []
    for cache in ["auto", "off"] if uncached else ["auto"]:
        load = os.getloadavg()[0]
        start = time.perf_counter()
        model = fd.FactorDiffusion.from_pretrained("quickstart")
        dataset = fd.data.load(model.config.data.name)
        cfg = model.config.eval
        results = fd.metrics.evaluate(
            model.represent, dataset, list(cfg.metrics), cfg.seed,
            representation=cfg.representation, cache=cache, progress=False,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        results = json.loads(results_to_json(results))
        diff = _differences(results, shipped)
        rows.append(
            {
                "codes": "cached" if cache == "auto" else "every sampled image encoded",
                "seconds_total": round(seconds, 1),
                "seconds_per_metric": {m: results[m]["seconds"] for m in cfg.metrics},
                "codes_cache": results["protocol"]["codes_cache"],
                "load_before": round(load, 2),
                "differences_from_shipped_eval_json": diff,
                "scores": fd.metrics.headline(results),
            }
        )
        print(json.dumps(rows[-1], indent=1), flush=True)
    print("\n| codes | total (s) | per metric (s) | images encoded | scores as shipped |")
    print("|---|---|---|---|---|")
    for r in rows:
        per = ", ".join(f"{m} {s:.1f}" for m, s in r["seconds_per_metric"].items())
        enc = r["codes_cache"].get("images_encoded", "all sampled")
        same = "identical" if not r["differences_from_shipped_eval_json"] else "DIFFERENT"
        print(f"| {r['codes']} | {r['seconds_total']:.1f} | {per} | {enc} | {same} |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine_info(), "rows": rows}, indent=2))
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval-shipped", action="store_true", help="time `factordiff eval`")
    parser.add_argument("--uncached", action="store_true", help="also without the cache")
    parser.add_argument("--kinds", default="disentangled,mixed,entangled")
    parser.add_argument("--n-train", type=int, default=10000)
    parser.add_argument("--n-test", type=int, default=5000)
    parser.add_argument("--n-jobs", type=int, default=1, help="factors fitted at once")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/metrics_speed.json"))
    args = parser.parse_args()
    if args.eval_shipped:
        out = args.out
        if out == Path("benchmarks/results/metrics_speed.json"):
            out = Path("benchmarks/results/metrics_speed_eval.json")
        eval_shipped(args.uncached, out)
        return

    machine = machine_info()
    rows = [run(k, args.n_train, args.n_test, args.n_jobs) for k in args.kinds.split(",")]

    print("\n| codes | backend | time (s) | D | C | I train | I test | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        for backend in ("lightgbm", "sklearn"):
            b = r[backend]
            scores = " | ".join(f"{b[k]:.4f}" for k in KEYS)
            speed = f"{r['speedup']:.1f}x" if backend == "lightgbm" else "1x (reference)"
            print(f"| {r['kind']} | {backend} | {b['seconds']:.1f} | {scores} | {speed} |")
    print(f"\nmax |lightgbm - sklearn| over D, C, I: {max(r['max_abs_diff'] for r in rows):.4f}")
    desc = f"{machine['cpu']}, {machine['logical_cpus']} logical CPUs, n_jobs={args.n_jobs}"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": machine,
                "n_jobs": args.n_jobs,
                "load_after": round(os.getloadavg()[0], 2),
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"machine: {desc}; wrote {args.out}")


if __name__ == "__main__":
    main()

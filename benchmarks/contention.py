"""Training throughput when another process shares the cores (issue 27).

Each scenario trains the quick-start recipe for a few diffusion steps in its own
``factordiff train`` process (first stage shortened to 20 steps; latents cached as the
recipe does) and reads its images/s from ``metrics.jsonl`` (median of the log windows after
the first). A *neighbour* process runs beside it for the whole run: a torch matmul loop at
default threads, a second training at default settings, or a slice of the test suite.
``train.threads``: ``auto`` (0, the default: PyTorch's count, dropped to 1 when steps
collapse), or a fixed count. The ratio to the same setting alone says what sharing costs:
a fair share of 2 cores between two processes is ~2x.

Run it on a quiet machine (nothing else busy): every figure is relative to "alone".

    python benchmarks/contention.py            # table + benchmarks/results/contention.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from train_throughput import cpu_name

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).parent.parent
MATMUL = "import torch\na = torch.randn(1024, 1024)\nwhile True:\n    a = torch.tanh(a @ a / 32)\n"
NEIGHBOURS = {
    "none": None,
    "matmul": [sys.executable, "-c", MATMUL],
    "training": [sys.executable, "-m", "factordiff", "train", "quickstart",
                 "model.first_stage.train_steps=20", "train.max_steps=100000",
                 "train.log_every=1000", "train.checkpoint_every=100000", "train.eval_every=0"],
    "tests": [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0",
              "tests/test_metrics_known.py", "tests/test_dci.py", "tests/test_hddc.py"],
}  # fmt: skip
#: (name, neighbour, train.threads, extra environment, diffusion steps)
SCENARIOS = [
    ("alone, threads 2", "none", 2, {}, 60),
    ("alone, threads 1", "none", 1, {}, 60),
    ("alone, auto", "none", 0, {}, 60),
    ("matmul beside, threads 2", "matmul", 2, {}, 10),
    ("matmul beside, threads 2, OMP_WAIT_POLICY=PASSIVE", "matmul", 2,
     {"OMP_WAIT_POLICY": "PASSIVE"}, 10),
    ("matmul beside, threads 1", "matmul", 1, {}, 60),
    ("matmul beside, auto", "matmul", 0, {}, 60),
    ("training beside, auto (both)", "training", 0, {}, 60),
    ("tests beside, auto", "tests", 0, {}, 60),
]  # fmt: skip


def images_per_s(run: Path) -> tuple[float, list[int]]:
    """Median images/s over the log windows after the first, and the thread counts seen."""
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]
    windows = [r for r in lines if "images_per_s" in r]
    rates = [r["images_per_s"] for r in windows[1:]] or [r["images_per_s"] for r in windows]
    return statistics.median(rates), sorted({r["threads"] for r in windows if "threads" in r})


def run_scenario(name, neighbour, threads, env_extra, steps, tmp: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    side = None
    if NEIGHBOURS[neighbour]:
        side_dir = tmp / f"neighbour-{len(list(tmp.iterdir()))}"
        cmd = NEIGHBOURS[neighbour] + (["--out", str(side_dir)] if neighbour == "training" else [])
        side = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        time.sleep(8 if neighbour != "matmul" else 2)  # let it get busy
    run = tmp / f"run-{len(list(tmp.iterdir()))}"
    cmd = [sys.executable, "-m", "factordiff", "train", "quickstart", "--out", str(run),
           "model.first_stage.train_steps=20", f"train.max_steps={steps}",
           f"train.log_every={5 if steps <= 20 else 10}", "train.checkpoint_every=100000",
           "train.eval_every=0", f"train.threads={threads}"]  # fmt: skip
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=ROOT, env={**env, **env_extra}, capture_output=True,
                              text=True, check=False)  # fmt: skip
    finally:
        if side is not None:
            side.kill()
            side.wait()
    if done.returncode:
        raise SystemExit(f"{name}: training failed:\n{done.stderr[-2000:]}")
    rate, seen = images_per_s(run)
    return {"scenario": name, "neighbour": neighbour, "threads_setting": threads or "auto",
            "env": env_extra, "steps": steps, "images_per_s": round(rate, 1),
            "threads_seen": seen, "wall_s": round(time.perf_counter() - start, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="comma-separated scenario numbers (0-based)")
    parser.add_argument("--out", type=Path, default=RESULTS / "contention.json")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each alone scenario")
    args = parser.parse_args()
    chosen = SCENARIOS
    if args.only:
        chosen = [SCENARIOS[int(i)] for i in args.only.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in chosen:  # alone: the median of --repeats runs (the first can be cold)
            repeats = args.repeats if scenario[1] == "none" else 1
            runs = [run_scenario(*scenario, Path(tmp)) for _ in range(repeats)]
            rows.append(
                runs[0]
                | {
                    "images_per_s": statistics.median(r["images_per_s"] for r in runs),
                    "images_per_s_runs": [r["images_per_s"] for r in runs],
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    alone = {r["threads_setting"]: r["images_per_s"] for r in rows if r["neighbour"] == "none"}
    best_alone = max(alone.values()) if alone else None
    for r in rows:
        r["slowdown_vs_best_alone"] = (
            round(best_alone / r["images_per_s"], 2) if best_alone else None
        )
    machine = f"{cpu_name()}, {os.cpu_count()} cores, torch {torch_version()}"
    lines = [
        f"Machine: {machine}. Quick-start recipe, images/s of the diffusion phase.",
        "",
        "| scenario | threads seen | images/s | slowdown vs best alone |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['scenario']} | {r['threads_seen']} | {r['images_per_s']} | "
                     f"{r['slowdown_vs_best_alone']}x |")  # fmt: skip
    table = "\n".join(lines)
    print(table)
    args.out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    args.out.with_suffix(".md").write_text(table + "\n")


def torch_version() -> str:
    import torch

    return torch.__version__


if __name__ == "__main__":
    main()

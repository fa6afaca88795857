"""Time to disentangle: score against wall-clock minutes for CPU recipe variants.

Each (variant, seed) is one ``factordiff train`` in its own process, scored during
training at the *full* protocol (``train.eval_scale=1.0``) every ``--eval-every`` steps.
The time axis is the run's own ``train_s`` (wall seconds of training, first stage
included, evaluation excluded; logged in ``metrics.jsonl``), so a curve shows what a user
waiting for the run gets at each minute. Writes JSON, a markdown table and a plot of
FactorVAE / DCI-D / MIG against minutes (mean over seeds, each seed faint).

    python benchmarks/time_to_disentangle.py --variants recipe --seeds 0,1,2
    python benchmarks/time_to_disentangle.py --variants v0.3,recipe --seeds 0 --threads 1 --jobs 2

``--threads`` is the threads of each run (the targets are stated for one run using both
cores: ``--threads 2 --jobs 1``); screening may run two one-thread runs side by side,
which the table records. Finished runs are read back, not retrained.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from scipy import stats
from train_throughput import cpu_name

HERE = Path(__file__).parent
SCORES = {"factorvae/eval_accuracy": "FactorVAE", "dci/disentanglement": "DCI-D", "mig/mig": "MIG"}
#: the issue's targets per dataset: (minutes, FactorVAE, DCI-D)
TARGETS = {"quickstart": (20, 0.90, 0.60), "shapes3d": (60, 0.85, 0.50)}

#: variant -> (preset, overrides). ``v0.3`` is the quick-start recipe shipped with 0.3.0
#: (written out, since the preset itself now holds the new recipe); each other variant
#: changes the current preset in one respect unless its name says otherwise.
V03 = ["model.first_stage.channels=32", "model.first_stage.loss=l1", "train.mixed_precision=no",
       "train.cache_latents=false"]  # fmt: skip
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "v0.3": ("quickstart", V03),
    "recipe": ("quickstart", []),
    "cosmap": ("quickstart", ["diffusion.t_sampling=cosmap"]),
    "unshuffle": ("quickstart", ["model.first_stage.kind=unshuffle"]),
    "unshuffle_scaled": (
        "quickstart",
        ["model.first_stage.kind=unshuffle", "model.first_stage.scale_pixels=true"],
    ),
    "cosine": ("quickstart", ["train.lr_schedule=cosine"]),
    "batch32": ("quickstart", ["train.batch_size=32"]),
    "unet32": ("quickstart", ["model.unet.model_channels=32"]),
    "units6": ("quickstart", ["model.encoder.n_units=6"]),
    "units5": ("quickstart", ["model.encoder.n_units=5"]),
    # carry-over: the recipe on other data, images downscaled to the recipe's 32x32
    "recipe_at32": ("quickstart", ["data.image_size=32"]),
    "lr_half": ("quickstart", ["train.base_lr=5.0e-6"]),
}


def run_dir(out: Path, variant: str, dataset: str, seed: int) -> Path:
    return out / f"{dataset}-{variant}-s{seed}"


def run_cell(variant: str, dataset: str, seed: int, args) -> Path:
    """Train one (variant, seed) in its own process unless it already finished."""
    preset, overrides = VARIANTS[variant]
    run = run_dir(Path(args.work), variant, dataset, seed)
    cmd = [sys.executable, "-m", "factordiff", "train", preset, "--out", str(run),
           *overrides, f"data.name={dataset}", *args.data_root, f"train.seed={seed}",
           f"train.max_steps={args.steps}", f"train.eval_every={args.eval_every}",
           "train.eval_scale=1.0", "train.checkpoint_every=100000",
           "train.keep_checkpoints=1"]  # fmt: skip
    if finished(run, args.steps):
        return run
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    print(f"[{variant} seed {seed}] {' '.join(cmd[2:])}", flush=True)
    log = Path(args.work) / f"{run.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        done = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if done.returncode:
        raise RuntimeError(f"{run.name} failed (exit {done.returncode}); see {log}")
    return run


def finished(run: Path, steps: int) -> bool:
    return any(r.get("step") == steps and "eval" in r for r in read_log(run))


def read_log(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []


def curve(run: Path) -> dict:
    """The run's evaluations against minutes, and when its first stage finished."""
    log = read_log(run)
    first = [r["train_s"] for r in log if "first_stage_step" in r and "train_s" in r]
    points = [
        {"step": r["step"], "minutes": r["train_s"] / 60,
         **{name: r["eval"][key] for key, name in SCORES.items()}}
        for r in log if "eval" in r
    ]  # fmt: skip
    return {"first_stage_minutes": max(first) / 60 if first else 0.0, "points": points}


def at_budget(points: list[dict], minutes: float) -> dict | None:
    """The last evaluation made within ``minutes`` of training."""
    inside = [p for p in points if p["minutes"] <= minutes]
    return inside[-1] if inside else None


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval (0 for one value)."""
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, 0.0
    return m, stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5


def summarise(curves: dict, dataset: str, budget: float) -> dict:
    summary = {}
    for variant, by_seed in curves.items():
        hits = [at_budget(c["points"], budget) for c in by_seed.values()]
        row: dict = {"seeds": sorted(by_seed), "budget_minutes": budget,
                     "first_stage_minutes": statistics.fmean(
                         c["first_stage_minutes"] for c in by_seed.values())}  # fmt: skip
        if all(hits):
            for name in SCORES.values():
                row[name] = mean_ci([h[name] for h in hits])
            row["step_at_budget"] = statistics.fmean(h["step"] for h in hits)
        last = [c["points"][-1] for c in by_seed.values() if c["points"]]
        row["final"] = {name: mean_ci([p[name] for p in last]) for name in SCORES.values()}
        row["final_minutes"] = statistics.fmean(p["minutes"] for p in last)
        row["final_step"] = last[0]["step"]
        summary[variant] = row
    return summary


def markdown(summary: dict, dataset: str, args) -> str:
    budget, fv, dci = TARGETS.get(dataset, (args.budget, None, None))
    lines = [
        f"# Time to disentangle: {dataset}",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores; each run {args.threads} thread(s), "
        f"{args.jobs} run(s) at a time. Full protocol, scored every {args.eval_every} steps; "
        f"minutes = the run's training wall time, first stage included, evaluation excluded. "
        f"Mean over seeds with the 95% t-interval half-width."
        + (f" Target: FactorVAE >= {fv}, DCI-D >= {dci} within {budget} min." if fv else ""),
        "",
        f"| variant | seeds | first stage (min) | FactorVAE @{args.budget:g} min | "
        f"DCI-D @{args.budget:g} min | MIG @{args.budget:g} min | final step (min) | "
        "FactorVAE final | DCI-D final |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for variant, row in summary.items():
        cells = [
            f"{row[n][0]:.3f} ± {row[n][1]:.3f}" if n in row else "not reached"
            for n in SCORES.values()
        ]
        fin = row["final"]
        lines.append(
            f"| {variant} | {len(row['seeds'])} | {row['first_stage_minutes']:.1f} | "
            + " | ".join(cells)
            + f" | {row['final_step']} ({row['final_minutes']:.1f}) | "
            f"{fin['FactorVAE'][0]:.3f} ± {fin['FactorVAE'][1]:.3f} | "
            f"{fin['DCI-D'][0]:.3f} ± {fin['DCI-D'][1]:.3f} |"
        )
    lines += ["", "Overrides of each variant (on top of its preset):", ""]
    for variant in summary:
        preset, overrides = VARIANTS[variant]
        lines.append(f"- `{variant}`: `{preset}` {' '.join(overrides) or '(as is)'}")
    return "\n".join(lines) + "\n"


def plot(curves: dict, dataset: str, budget: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = TARGETS.get(dataset)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, name in zip(axes, SCORES.values(), strict=True):
        for i, (variant, by_seed) in enumerate(curves.items()):
            color = f"C{i}"
            for c in by_seed.values():
                xs = [p["minutes"] for p in c["points"]]
                ax.plot(xs, [p[name] for p in c["points"]], color=color, alpha=0.25, lw=0.8)
            steps = sorted({p["step"] for c in by_seed.values() for p in c["points"]})
            mean_x, mean_y = [], []
            for s in steps:
                at = [p for c in by_seed.values() for p in c["points"] if p["step"] == s]
                if len(at) == len(by_seed):
                    mean_x.append(statistics.fmean(p["minutes"] for p in at))
                    mean_y.append(statistics.fmean(p[name] for p in at))
            ax.plot(mean_x, mean_y, "o-", color=color, ms=3, label=variant)
        goal = {"FactorVAE": 1, "DCI-D": 2}.get(name)
        if target and goal:
            ax.axhline(target[goal], color="grey", ls="--", lw=0.8)
        ax.axvline(budget, color="grey", ls=":", lw=0.8)
        ax.set(xlabel="training minutes (first stage included)", ylabel=name, title=name)
        ax.grid(alpha=0.3)
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
    fig.suptitle(f"{dataset}: score against wall-clock minutes ({cpu_name()})", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110, bbox_inches="tight")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="quickstart")
    ap.add_argument("--data-root", default=None, help="data.root of every run (imagefolder)")
    ap.add_argument("--variants", default="v0.3,recipe", help=f"of {', '.join(VARIANTS)}")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=5000, help="diffusion steps of each run")
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--budget", type=float, default=None, help="minutes; default: the target's")
    ap.add_argument("--threads", type=int, default=2, help="threads of each run")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time")
    ap.add_argument("--work", default="runs/time_to_disentangle")
    ap.add_argument("--name", default=None, help="results file stem")
    args = ap.parse_args()
    args.budget = args.budget or TARGETS.get(args.dataset, (20,))[0]
    args.data_root = [f"data.root={args.data_root}"] if args.data_root else []
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    cells = [(v, s) for s in seeds for v in variants]
    with ThreadPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(lambda c: run_cell(c[0], args.dataset, c[1], args), cells))
    curves: dict = {}
    for (variant, seed), run in zip(cells, runs, strict=True):
        curves.setdefault(variant, {})[seed] = curve(run)
    summary = summarise(curves, args.dataset, args.budget)
    stem = HERE / "results" / (args.name or f"time_to_disentangle_{args.dataset}")
    record = {"dataset": args.dataset, "data_root": args.data_root, "machine": cpu_name(),
              "cores": os.cpu_count(),
              "threads_per_run": args.threads, "jobs": args.jobs, "steps": args.steps,
              "eval_every": args.eval_every, "budget_minutes": args.budget,
              "variants": {v: VARIANTS[v] for v in variants}, "summary": summary,
              "curves": curves}  # fmt: skip
    stem.with_suffix(".json").write_text(json.dumps(record, indent=1))
    text = markdown(summary, args.dataset, args)
    stem.with_suffix(".md").write_text(text)
    plot(curves, args.dataset, args.budget, stem.with_suffix(".png"))
    print(text)


if __name__ == "__main__":
    main()

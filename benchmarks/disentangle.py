"""The disentanglement benchmark: EncDiff, EncDiff + DyGA + SD and the beta-VAE family on
the same data with the same image budget, several seeds, scored by the same metrics.

Each cell (method, dataset, seed) is one ``factordiff train`` + ``factordiff eval`` in its
own process (so peak memory is that cell's), ``--jobs`` cells at a time with one thread
each. Prints mean +- std over seeds, writes JSON, a markdown table and a plot of score
against training time.

    python benchmarks/disentangle.py --config cpu-quick     # quickstart only, minutes per cell
    python benchmarks/disentangle.py --config cpu           # shapes3d + dsprites, ~70 min
    python benchmarks/disentangle.py --config gpu --jobs 1  # published settings, on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from train_throughput import cpu_name

HERE = Path(__file__).parent
METHODS = ("encdiff", "encdiff_dyga_sd", "betavae", "betatcvae", "factorvae")
COST_ORDER = ("encdiff_dyga_sd", "encdiff", "factorvae", "betavae", "betatcvae")
COLUMNS = ["factorvae/eval_accuracy", "dci/disentanglement", "dci/completeness",
           "dci/informativeness_test", "mig/mig", "sap/sap", "infomec/infom",
           "infomec/infoe", "infomec/infoc"]  # fmt: skip

#: config name -> (datasets, steps of batch 64, eval scale). The CPU configurations give
#: every method the same number of training images; published settings differ per method.
CONFIGS = {
    "cpu-quick": (("quickstart",), 1500, 0.5),
    "cpu": (("shapes3d", "dsprites"), 1200, 0.15),
    "gpu": (("shapes3d", "dsprites"), None, 1.0),
}


#: The quick-start recipe at 64x64 on 2 CPU cores: a parameter-free pixel-unshuffle latent
#: (64x64xC -> 8x8x64C, the same 8x8 grid as the quick start's) instead of a KL autoencoder,
#: whose decoder at 64x64 costs ~4 s a step on one core, and bf16 autocast (1.5x faster).
RECIPE_64 = ["model.first_stage.kind=unshuffle", "model.first_stage.patch_size=8",
             "train.mixed_precision=bf16"]  # fmt: skip


#: ``--sweep``: the hyperparameter grids of disentanglement_lib's unsupervised study.
SWEEP = {"betavae": ("beta", (1, 2, 4, 6, 8, 16)), "betatcvae": ("beta", (1, 2, 4, 6, 8, 10)),
         "factorvae": ("gamma", (10, 20, 30, 40, 50, 100))}  # fmt: skip


def sweep_methods(methods: list[str]) -> list[str]:
    """Each baseline in ``methods`` once per value of its study grid (``betavae:beta=1``...)."""
    out = []
    for method in methods:
        key, values = SWEEP.get(method, (None, ()))
        out += [f"{method}:{key}={v}" for v in values] if key else [method]
    return out


def preset(method: str, dataset: str, published: bool) -> tuple[str, list[str]]:
    """Preset and overrides of a method on a dataset: the published presets, or (CPU
    configurations) the quick-start recipes pointed at the dataset. A baseline may carry one
    hyperparameter, ``betavae:beta=2`` -> ``model.vae.beta=2``."""
    method, _, setting = method.partition(":")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    if setting:
        if method not in SWEEP or setting.split("=")[0] != SWEEP[method][0]:
            raise ValueError(f"{method}:{setting}: expected {method}:{SWEEP[method][0]}=VALUE"
                             if method in SWEEP else f"{method} takes no setting")  # fmt: skip
        return f"{method}_{dataset}", [f"model.vae.{setting}"]
    if method.startswith("encdiff") and published:
        return dataset + ("_dyga" if method == "encdiff_dyga_sd" else ""), []
    if method.startswith("encdiff"):
        name = "quickstart_dyga" if method == "encdiff_dyga_sd" else "quickstart"
        if dataset == "quickstart":
            return name, []
        return name, [f"data.name={dataset}", *RECIPE_64]
    return f"{method}_{dataset}", []


def run_cell(method: str, dataset: str, seed: int, steps: int | None, scale: float,
             root: Path) -> dict:  # fmt: skip
    """Train and evaluate one cell, or reuse its row when the same cell already finished
    (``cell.json`` beside the run); a run left unfinished is started again so that its
    training time is one uninterrupted measurement."""
    run = root / f"{dataset}-{method.replace(':', '-')}-seed{seed}"
    name, extra = preset(method, dataset, published=steps is None)
    overrides = [*extra, f"train.seed={seed}", "train.eval_every=0"]
    if steps is not None:
        overrides += [f"train.max_steps={steps}", f"train.checkpoint_every={steps}",
                      "train.batch_size=64"]  # fmt: skip
    key = {"preset": name, "overrides": overrides, "eval_scale": scale}
    done = run / "cell.json"
    finished = json.loads(done.read_text()) if done.exists() else None
    if finished and finished["key"] == key:
        return finished["row"]
    shutil.rmtree(run, ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    code = (
        "import json, resource, sys, time\n"
        "from factordiff.config import load_config\n"
        "from factordiff.training import train\n"
        "start = time.perf_counter()\n"
        f"train(load_config({name!r}, {overrides!r}), {str(run)!r}, progress=False)\n"
        "seconds = time.perf_counter() - start\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "print(json.dumps({'train_s': seconds, 'peak_mib': peak}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=False)  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"{run}: training failed\n{out.stderr[-2000:]}")
    stats = json.loads(out.stdout.strip().splitlines()[-1])
    eval_start = time.perf_counter()
    ev = subprocess.run(
        [sys.executable, "-m", "factordiff", "eval", str(run), "--scale", str(scale)],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if ev.returncode != 0:
        raise RuntimeError(f"{run}: evaluation failed\n{ev.stderr[-2000:]}")
    from factordiff.config import load_config
    from factordiff.metrics import headline

    cfg = load_config(run / "config.yaml")
    scores = headline(json.loads((run / "eval.json").read_text()))
    row = {"method": method, "dataset": dataset, "seed": seed, **scores,
           "train_s": round(stats["train_s"], 1), "peak_mib": round(stats["peak_mib"]),
           "images_seen": cfg.train.max_steps * cfg.train.batch_size,
           "eval_s": round(time.perf_counter() - eval_start, 1)}  # fmt: skip
    done.write_text(json.dumps({"key": key, "row": row}, indent=1))
    return row


def summarise(rows: list[dict]) -> list[str]:
    cols = [*COLUMNS, "train_s", "images_seen", "peak_mib"]
    table = ["| dataset | method | " + " | ".join(c.split("/")[-1] for c in cols) + " |",
             "|---" * (len(cols) + 2) + "|"]  # fmt: skip
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        for method in dict.fromkeys(r["method"] for r in rows):
            mine = [r for r in rows if r["dataset"] == dataset and r["method"] == method]
            if not mine:
                continue
            cells = []
            for c in cols:
                vals = [r[c] for r in mine if c in r]
                if not vals:  # scored before the metric existed (InfoMEC): rerun the cell
                    cells.append("n/a")
                    continue
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                mean = statistics.mean(vals)
                cells.append(f"{mean:.3f} +- {sd:.3f}" if c in COLUMNS else f"{mean:.0f}")
            table.append(f"| {dataset} | {method} | " + " | ".join(cells) + " |")
    return table


def plot(rows: list[dict], out: Path) -> None:
    """FactorVAE score and DCI-D against training minutes: each seed faint, the mean +- std
    over seeds bold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    scores = {"factorvae/eval_accuracy": "FactorVAE score", "dci/disentanglement": "DCI-D"}
    fig, axes = plt.subplots(len(scores), len(datasets), figsize=(5 * len(datasets), 7),
                             squeeze=False)  # fmt: skip
    for col, dataset in enumerate(datasets):
        for row, (score, label) in enumerate(scores.items()):
            ax = axes[row][col]
            for k, method in enumerate(dict.fromkeys(r["method"] for r in rows)):
                mine = [r for r in rows if r["dataset"] == dataset and r["method"] == method]
                if not mine:
                    continue
                minutes = [r["train_s"] / 60 for r in mine]
                vals = [r[score] for r in mine]
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                ax.scatter(minutes, vals, color=f"C{k}", alpha=0.35, s=14)
                ax.errorbar(statistics.mean(minutes), statistics.mean(vals), yerr=sd,
                            color=f"C{k}", marker="o", capsize=3, label=method)  # fmt: skip
            ax.set(xscale="log", xlabel="training minutes (one core)", ylabel=label,
                   title=dataset)  # fmt: skip
            ax.xaxis.set_major_locator(FixedLocator([0.5, 1, 2, 5, 10, 20, 50, 100, 200]))
            ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="cpu-quick")
    parser.add_argument("--datasets", help="a subset of the configuration's datasets")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="each baseline over its disentanglement_lib hyperparameter grid",
    )
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--jobs", type=int, default=2, help="cells at once (one core each)")
    parser.add_argument("--steps", type=int, help="override the configuration's steps")
    parser.add_argument("--runs", type=Path, default=Path("runs/disentangle"))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "disentangle")
    parser.add_argument("--replot", type=Path, help="redraw the plot of a results JSON and exit")
    args = parser.parse_args()
    if args.replot:
        plot(json.loads(args.replot.read_text())["rows"], args.replot.with_suffix(".png"))
        return
    datasets, steps, scale = CONFIGS[args.config]
    steps = args.steps or steps
    if args.datasets:
        unknown = set(args.datasets.split(",")) - set(datasets)
        if unknown:
            parser.error(f"--datasets {sorted(unknown)} not in config {args.config}: {datasets}")
        datasets = tuple(args.datasets.split(","))
    methods = args.methods.split(",")
    methods = sweep_methods(methods) if args.sweep else methods
    for method in methods:  # bad names fail before any run
        try:
            preset(method, datasets[0], published=steps is None)
        except ValueError as err:
            parser.error(str(err))
    cells = [(m, d, int(s)) for d in datasets for m in methods for s in args.seeds.split(",")]
    # Longest cells first so that the last one does not run alone on an idle machine.
    cells.sort(key=lambda c: COST_ORDER.index(c[0].partition(":")[0]))
    start = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda c: run_cell(*c, steps, scale, args.runs), cells))
    rows.sort(key=lambda r: (datasets.index(r["dataset"]), methods.index(r["method"]), r["seed"]))
    table = summarise(rows)
    print("\n".join(table))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    stem = args.out.with_name(f"{args.out.name}_{args.config}" + ("_sweep" if args.sweep else ""))
    report = {"config": args.config, "steps": steps, "batch_size": 64, "eval_scale": scale,
              "seeds": args.seeds, "wall_s": round(time.perf_counter() - start),
              "machine": {"cpu": cpu_name(), "cpus": os.cpu_count(),
                          "python": sys.version.split()[0],
                          "self_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                          // 1024},
              "rows": rows, "table": table}  # fmt: skip
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1))
    stem.with_suffix(".md").write_text("\n".join(table) + "\n")
    plot(rows, stem.with_suffix(".png"))
    print(f"wrote {stem}.json / .md / .png")


if __name__ == "__main__":
    main()

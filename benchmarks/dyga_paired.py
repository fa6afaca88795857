"""Does DyGA + Skip Dropout help EncDiff? Paired seeds at the recipe's full budget (issue 28).

Arms, each built from a preset by composition (``quickstart_dyga`` is ``quickstart`` plus
anchoring and Skip Dropout and nothing else; ``factordiff config diff`` shows it):

* ``encdiff``   -- the ``quickstart`` recipe (EncDiff encoder, scalar units scored);
* ``dyga_sd``   -- + DyGA + Skip Dropout: the ``quickstart_dyga`` preset (the paper's method,
  anchors on the units' scalars: one 1-D mixture per unit, the scored code itself pulled);
* ``dyga_sd_tokens`` -- the same with anchors on the units' tokens (what the U-Net attends
  to, as the paper anchors its features): the space screen, seed 0;
* ``control``   -- ``dyga_sd`` with a strong pull (fixed lam 0.5): a positive control, to show
  the design can see anchoring move scores at all;
* ``dyga``, ``sd`` -- each part alone;
* ``paper_dyga_sd`` -- the DyGA paper's feature extractor (``quickstart_dyga_paper``), another
  encoder, reported as its own row; ``dyga_official_sd`` -- the released lam formula.

Order: the primary comparison (``encdiff`` and ``dyga_sd``, seed by seed) first, then the
control, then the single parts, then the rest. Seed s is shared by every arm: the same data
order, noise and timestep draws and the same initial weights, so ``arm - encdiff`` at seed s
is a paired difference. The summary gives per arm mean +- std, the paired difference to
``encdiff`` with a 95 % paired t-interval and the sign count, the smallest difference the
design detects (80 % power, two-sided 5 %), and per-factor FactorVAE vote accuracy.

Each cell is one run directory with ``cell.json`` when finished (its preset, overrides, the
commit and CPU it ran on); a finished cell with the same settings is never rerun, a killed
one resumes from its last checkpoint. Rows already in the committed results JSON are kept
(run directories are not committed); a new cell of the same arm and seed replaces its row,
and the replaced row is kept under ``replaced_rows``. A pair counts only when both of its
cells ran on the same CPU model: BLAS kernels differ between machines, so a cross-machine
pair would differ in more than the arm. Cells run one thread each: ``--shard i/n`` runs every
n-th cell (n processes for n cores). ``--summarise`` only reads the cells and writes JSON +
markdown + a plot; run it whenever cells finish (partial grids are summarised as they are).

    python benchmarks/dyga_paired.py --arms encdiff,dyga_sd --shard 0/2   # and 1/2 beside it
    python benchmarks/dyga_paired.py --summarise
    python benchmarks/dyga_paired.py --dataset heldout --data-root runs/heldout64 \\
        --arms encdiff,dyga_sd
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
from scipy import stats
from train_throughput import cpu_name

RESULTS = Path(__file__).parent / "results"
SCORES = ["factorvae/eval_accuracy", "dci/disentanglement", "dci/completeness",
          "dci/informativeness_test", "mig/mig", "sap/sap", "modularity/modularity"]  # fmt: skip
SHORT = {"factorvae/eval_accuracy": "FactorVAE", "dci/disentanglement": "DCI-D",
         "dci/completeness": "DCI-C", "dci/informativeness_test": "DCI-I", "mig/mig": "MIG",
         "sap/sap": "SAP", "modularity/modularity": "Modularity"}  # fmt: skip
VARIANTS = {
    "encdiff": ("quickstart", []),
    "dyga_sd": ("quickstart_dyga", []),
    "dyga_sd_tokens": ("quickstart_dyga", ["anchoring.space=tokens"]),
    "control": ("quickstart_dyga", ["anchoring.fixed_lam=0.5"]),
    "dyga": ("quickstart_dyga", ["model.unet.skip_dropout=0.0"]),
    "sd": (
        "quickstart",
        ["model.unet.skip_dropout=0.2", "model.unet.skip_dropout_resolutions=[1]"],
    ),
    "paper_dyga_sd": ("quickstart_dyga_paper", []),
    "dyga_official_sd": ("quickstart_dyga", ["anchoring.lam_rule=official"]),
}
PRIMARY = ("encdiff", "dyga_sd")  # run first, seed by seed


def dataset_overrides(dataset: str, data_root: str | None) -> list[str]:
    """The quick-start data as the recipe has it, or the held-out image folder at 32x32 (the
    one setting a user changes for it besides the units: docs/training.md)."""
    if dataset == "quickstart":
        return []
    if not data_root:
        raise SystemExit("--dataset heldout needs --data-root (benchmarks/heldout_folder.py)")
    return ["data.name=imagefolder", f"data.root={data_root}", "data.image_size=32"]


def cell_config(variant: str, dataset: str, seed: int, args):
    from factordiff.config import load_config

    preset, extra = VARIANTS[variant]
    overrides = [*dataset_overrides(dataset, args.data_root), *extra, f"train.seed={seed}",
                 f"train.max_steps={args.steps}", f"train.checkpoint_every={min(500, args.steps)}",
                 "train.eval_every=0", "train.keep_checkpoints=1", *args.set]  # fmt: skip
    return preset, overrides, load_config(preset, overrides)


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=False, cwd=Path(__file__).parent)  # fmt: skip
    return done.stdout.strip() or "unknown"


def anchoring_summary(run: Path) -> dict | None:
    """What the logs say anchoring did: mean lam / move / zero share per unit over the
    logged steps, and K, splits, filters per unit at each refit."""
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]
    pulls = [r for r in records if "anchor_lam" in r]
    fits = [r for r in records if "anchor_fit_s" in r]
    if not fits:
        return None

    def mean(key):
        return [round(float(v), 4) for v in np.mean([r[key] for r in pulls], axis=0)]

    return {
        "refit_steps": [r["step"] for r in fits],
        "anchors_per_unit": [r["anchors"] for r in fits],
        "splits_per_unit": [r.get("anchor_splits") for r in fits],
        "merged_per_unit": [r.get("anchor_merged") for r in fits],
        "fit_s": [round(r["anchor_fit_s"], 1) for r in fits],
        "filtered_per_unit": [r.get("anchor_filtered") for r in fits],
        "lam_per_unit": mean("anchor_lam") if pulls else None,
        "move_per_unit": mean("anchor_move") if pulls else None,
        "token_zero_share_per_unit": mean("token_zero_share") if pulls else None,
    }


class CachedRepresent:
    """``model.represent`` with every distinct image encoded once: the procedural datasets
    here have a few thousand images, the metrics ask for ~10^5 (FactorVAE votes). Eval-mode
    codes do not depend on the batch (the ``spread`` lam is per token), so this is the
    same function, minutes faster."""

    def __init__(self, model, dataset) -> None:
        rows = np.arange(len(dataset))
        images = dataset.images_at(rows)
        codes = np.concatenate([model.represent(images[i : i + 512])
                                for i in range(0, len(images), 512)])  # fmt: skip
        self.index = {images[i].tobytes(): i for i in rows}
        self.codes = codes

    def __call__(self, images) -> np.ndarray:
        images = np.asarray(images)
        return self.codes[[self.index[im.tobytes()] for im in images]]


class GridImages:
    """A full-grid procedural dataset with every image rendered once: ``images(factors)``
    looks them up (row = ravel_multi_index(factors)), instead of rendering each FactorVAE
    vote's 64 images again. Same images, same metric; everything else is delegated."""

    def __init__(self, dataset) -> None:
        self._ds = dataset
        self._all = dataset.images_at(np.arange(len(dataset)))

    def images(self, factors):
        return self._all[np.ravel_multi_index(np.asarray(factors).T, self._ds.factor_sizes)]

    def images_at(self, rows):
        return self._all[np.asarray(rows)]

    def __len__(self) -> int:
        return len(self._ds)

    def __getattr__(self, name):
        return getattr(self._ds, name)


def precision_conflict(run: Path, requested: str, here_fp32: bool, steps: int) -> str | None:
    """Why a begun cell must not go on training on this machine, else None. A bf16 cell
    begun on a CPU with bf16 instructions and resumed on one without would train the rest in
    fp32 (and the other way round; ``factordiff.training.precision``): a computation no other
    cell shares, so it would pair with none. A cell whose training is finished (``steps``
    reached) is only scored, which precision does not touch. The run's log says how it
    began (a line torn by a kill is skipped, as the run's logger does)."""
    from factordiff.checkpoint import latest_checkpoint, load_state
    from factordiff.viz.plots import read_metrics_log

    log = run / "metrics.jsonl"
    if requested != "bf16" or not log.is_file():
        return None
    newest = latest_checkpoint(run)
    if newest is not None and load_state(newest)["step"] >= steps:
        return None
    records = read_metrics_log(log)
    if not records:
        return None
    began_fp32 = any(r.get("mixed_precision_used") == "no" for r in records)
    if began_fp32 == here_fp32:
        return None
    began, here = ("fp32", "bf16") if began_fp32 else ("bf16", "fp32")
    return (f"{run} began training in {began} on another kind of CPU; this CPU would train the "
            f"rest in {here}. Finish it on a CPU like the first, or delete the folder to run "
            "the cell afresh here")  # fmt: skip


def run_cell(variant: str, dataset: str, seed: int, args) -> dict | None:
    """Train (or resume) and score one cell; None when it began on another kind of CPU."""
    import torch

    from factordiff import metrics
    from factordiff.data import load_dataset
    from factordiff.pipeline import FactorDiffusion
    from factordiff.training import train
    from factordiff.training.precision import native_cpu_bf16

    run = args.runs / f"{dataset}-{variant}-seed{seed}"
    preset, overrides, cfg = cell_config(variant, dataset, seed, args)
    key = {"preset": preset, "overrides": overrides, "eval_scale": args.eval_scale}
    done = run / "cell.json"
    if done.is_file() and json.loads(done.read_text())["key"] == key:
        return json.loads(done.read_text())["row"]
    conflict = precision_conflict(
        run, cfg.train.mixed_precision, not native_cpu_bf16(), cfg.train.max_steps
    )
    if conflict:
        print(f"skipped: {conflict}", flush=True)
        return None
    torch.set_num_threads(1)
    start = time.perf_counter()
    train(cfg, run, progress=False)  # resumes a cell killed mid-training
    train_s = time.perf_counter() - start
    model = FactorDiffusion.from_pretrained(run)
    data = load_dataset(cfg.data)
    start = time.perf_counter()
    if cfg.data.name != "imagefolder":  # a full procedural grid: render each image once
        data = GridImages(data)
    represent = CachedRepresent(model, data)
    res = metrics.evaluate(represent, data, cfg.eval.metrics, 0, scale=args.eval_scale,
                           progress=False)  # fmt: skip
    row = {"variant": variant, "dataset": dataset, "seed": seed, "train_s": round(train_s, 1),
           "eval_s": round(time.perf_counter() - start, 1), **metrics.headline(res),
           "factorvae_per_factor": res["factorvae"]["eval_accuracy_per_factor"],
           "factor_names": list(data.factor_names), "cpu": cpu_name(), "threads": 1,
           "commit": commit(), "represents": model.representation_of,
           "anchoring": anchoring_summary(run)}  # fmt: skip
    done.write_text(json.dumps({"key": key, "row": row}, indent=1))
    print(f"{dataset} {variant} seed {seed}: " + ", ".join(
        f"{SHORT[k]} {row[k]:.3f}" for k in SCORES if k in row), flush=True)  # fmt: skip
    return row


def measure_pull(run: Path, n_images: int = 1024, batch: int = 64) -> dict:
    """The pull of a finished run's anchors on the units of ``n_images`` training images
    (eval mode, batches of ``batch`` as in training), under each lam rule: per unit the
    mean lam, the move as a share of the distance to the anchor, the zero share."""
    import torch

    from factordiff.data import load_dataset
    from factordiff.models.anchoring import Anchors
    from factordiff.pipeline import FactorDiffusion

    model = FactorDiffusion.from_pretrained(run)
    data = load_dataset(model.config.data)
    rows = np.sort(np.random.RandomState(0).choice(len(data), n_images, replace=False))
    with torch.no_grad():
        model.eval()
        x = model.prepare_images(data.images_at(rows))
        tokens = torch.cat([model.encoder(x[i : i + batch])[1] for i in range(0, len(x), batch)])
    out = {"run": str(run), "n_images": n_images, "batch": batch}
    for rule in ("official", "spread"):
        anchors = Anchors(model.anchors.units, strength=model.config.anchoring.strength,
                          lam_rule=rule)  # fmt: skip
        for i in range(0, len(tokens), batch):
            anchors.align(tokens[i : i + batch], record=True)
        out[rule] = anchors.pop_stats()
    return out


def paired_t(diffs: list[float]) -> dict:
    """Mean of paired differences, its 95 % t-interval, and the smallest true difference
    this many seeds detect with 80 % power at a two-sided 5 % level (from their spread)."""
    d = np.asarray(diffs, dtype=np.float64)
    n = len(d)
    out = {"n": n, "per_seed": d.tolist(), "mean": float(d.mean()), "ahead": int((d > 0).sum())}
    if n < 2:
        return {**out, "ci95": [float("nan")] * 2, "sd": float("nan"), "detectable": float("nan")}
    sd = float(d.std(ddof=1))
    se = sd / np.sqrt(n)
    half = float(stats.t.ppf(0.975, n - 1) * se)
    detectable = float((stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.8, n - 1)) * se)
    return {**out, "sd": sd, "ci95": [out["mean"] - half, out["mean"] + half],
            "detectable": detectable}  # fmt: skip


def summarise(rows: list[dict], variants: list[str], seeds: list[int]) -> dict:
    by = {(r["variant"], r["seed"]): r for r in rows}

    def same_machine(v: str, s: int) -> bool:
        return ("encdiff", s) in by and by[(v, s)].get("cpu") == by[("encdiff", s)].get("cpu")

    out: dict = {}
    for v in variants:
        have = [s for s in seeds if (v, s) in by]
        if not have:
            continue
        entry: dict = {"seeds": have, "scores": {}, "paired_vs_encdiff": {}}
        for k in SCORES:
            vals = [by[(v, s)][k] for s in have]
            entry["scores"][k] = {"mean": statistics.mean(vals),
                                  "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                                  "per_seed": vals}  # fmt: skip
            pair = [s for s in have if same_machine(v, s)]
            if v != "encdiff" and pair:
                diffs = [by[(v, s)][k] - by[("encdiff", s)][k] for s in pair]
                entry["paired_vs_encdiff"][k] = {"seeds": pair, **paired_t(diffs)}
        per_factor = [by[(v, s)].get("factorvae_per_factor") for s in have]
        if all(per_factor):
            entry["factorvae_per_factor"] = {
                "factors": by[(v, have[0])]["factor_names"],
                "mean": np.mean(per_factor, axis=0).round(3).tolist(),
            }
        pulls = [by[(v, s)]["anchoring"] for s in have if by[(v, s)].get("anchoring")]
        if pulls and pulls[0].get("lam_per_unit"):

            def over_seeds(key, pulls=pulls):
                return np.mean([p[key] for p in pulls], 0).round(4).tolist()

            entry["anchoring"] = {
                "lam_per_unit_mean_over_seeds": over_seeds("lam_per_unit"),
                "move_per_unit_mean_over_seeds": over_seeds("move_per_unit"),
                "zero_share_mean": round(
                    float(np.mean(over_seeds("token_zero_share_per_unit"))), 4
                ),
                "anchors_per_unit_last_refit": [p["anchors_per_unit"][-1] for p in pulls],
            }
        out[v] = entry
    return out


def markdown(summary: dict, rows: list[dict], dataset: str, args) -> str:
    machines = sorted({f"{r.get('cpu', '?')}, {r.get('threads', '?')} thread" for r in rows})
    budget = " (the recipe's full budget)" if args.steps == 3500 else ""
    lines = [f"Dataset `{dataset}`, {args.steps} steps x batch 64 per run{budget}, "
             f"seeds {args.seeds}, metrics at {args.eval_scale} x the protocol's "
             f"sample counts. Machine(s): {'; '.join(machines)}. Mean +- std over seeds.",
             "", "| arm | n | " + " | ".join(SHORT[k] for k in SCORES) + " |",
             "|---" * (len(SCORES) + 2) + "|"]  # fmt: skip
    for v, e in summary.items():
        cells = [f"{e['scores'][k]['mean']:.3f} +- {e['scores'][k]['std']:.3f}" for k in SCORES]
        lines.append(f"| {v} | {len(e['seeds'])} | " + " | ".join(cells) + " |")
    lines += ["", "Paired difference to `encdiff` (same seed): mean [95 % paired t-interval] "
              "seeds ahead / seeds; below it, the smallest difference these seeds detect "
              "(80 % power, two-sided 5 %):", "",
              "| arm | " + " | ".join(SHORT[k] for k in SCORES) + " |",
              "|---" * (len(SCORES) + 1) + "|"]  # fmt: skip
    for v, e in summary.items():
        if not e["paired_vs_encdiff"]:
            continue
        cells, detect = [], []
        for k in SCORES:
            d = e["paired_vs_encdiff"][k]
            if d["n"] < 2:  # one pair: a difference, no interval
                cells.append(f"{d['mean']:+.3f} (1 seed, no interval)")
                detect.append("n/a")
                continue
            mark = " *" if d["ci95"][0] > 0 or d["ci95"][1] < 0 else ""
            cells.append(f"{d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]{mark} "
                         f"{d['ahead']}/{d['n']}")  # fmt: skip
            detect.append(f"{d['detectable']:.3f}")
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
        lines.append("| (detectable) | " + " | ".join(detect) + " |")
    paired = sorted({s for e in summary.values() for d in e["paired_vs_encdiff"].values()
                     for s in d["seeds"]})  # fmt: skip
    cpu_of = {r["seed"]: r.get("cpu", "?") for r in rows if r["variant"] == "encdiff"}
    lines += ["", "`*`: the t-interval excludes 0. Both cells of a pair ran on one kind of CPU "
              "(they differ in the arm only); pairs of different seeds may not (a CPU without "
              "bf16 trains the bf16 recipe in fp32): "
              + "; ".join(f"seed {s}: {cpu_of.get(s, '?')}" for s in paired) + ".", "",
              "FactorVAE vote accuracy per factor (share of each factor's eval votes "
              "classified right), mean over seeds:", ""]  # fmt: skip
    for v, e in summary.items():
        pf = e.get("factorvae_per_factor")
        if pf:
            pairs = ", ".join(
                f"{n} {a:.2f}" for n, a in zip(pf["factors"], pf["mean"], strict=True)
            )
            lines.append(f"- {v}: {pairs}")
    lines += ["", "What anchoring did (from the runs' logs, mean over the logged steps after "
              "the first refit and over seeds):", "",
              "| arm | lam per unit | move / distance per unit | token zero share "
              "| K per unit (last refit, first seed) |",
              "|---|---|---|---|---|"]  # fmt: skip
    for v, e in summary.items():
        a = e.get("anchoring")
        if a:
            lines.append(f"| {v} | {a['lam_per_unit_mean_over_seeds']} | "
                         f"{a['move_per_unit_mean_over_seeds']} | {a['zero_share_mean']} | "
                         f"{a['anchors_per_unit_last_refit'][0]} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(summary: dict, dataset: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["factorvae/eval_accuracy", "dci/disentanglement", "mig/mig"]
    variants = [v for v, e in summary.items() if e["paired_vs_encdiff"]]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 0.9 + 0.45 * len(variants)))
    for ax, k in zip(axes, keys, strict=True):
        for i, v in enumerate(variants):
            d = summary[v]["paired_vs_encdiff"][k]
            if d["n"] > 1:
                ax.errorbar(d["mean"], i, xerr=[[d["mean"] - d["ci95"][0]],
                            [d["ci95"][1] - d["mean"]]], fmt="o", color="tab:blue",
                            capsize=3)  # fmt: skip
            ax.scatter(d["per_seed"], [i] * len(d["per_seed"]), s=10, color="tab:gray", zorder=0)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(range(len(variants)), variants, fontsize=8)
        ax.set_title(f"{SHORT[k]}: arm - encdiff", fontsize=9)
    fig.suptitle(f"{dataset}: paired differences, 95 % t-intervals (grey: seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def committed_rows(path: Path) -> tuple[list[dict], list[dict]]:
    """The rows (and replaced rows) of an earlier summary: finished cells whose run
    directories are not in the repository."""
    if not path.is_file():
        return [], []
    found = json.loads(path.read_text())
    return found.get("rows", []), found.get("replaced_rows", [])


def merge_row(rows: list[dict], replaced: list[dict], row: dict) -> tuple[list, list]:
    """Add a finished cell's row; an earlier row of the same arm and seed that differs from it
    moves to ``replaced`` (kept, with the machine and commit it ran on)."""
    same = [r for r in rows if (r["variant"], r["seed"]) == (row["variant"], row["seed"])]
    if same and same[0] == row:
        return rows, replaced
    keep = [r for r in rows if r not in same]
    return [*keep, row], [*replaced, *same]


def grid_cells(variants: list[str], seeds: list[int]) -> list[tuple[str, int]]:
    """The primary pair seed by seed first, then each other arm over all seeds in order."""
    cells = [(v, s) for s in seeds for v in variants if v in PRIMARY]
    return cells + [(v, s) for v in variants if v not in PRIMARY for s in seeds]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="quickstart", choices=["quickstart", "heldout"])
    parser.add_argument("--data-root", default=None, help="the held-out image folder")
    parser.add_argument("--arms", default=",".join(VARIANTS))
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--steps", type=int, default=3500)
    parser.add_argument("--eval-scale", type=float, default=1.0)
    parser.add_argument("--runs", type=Path, default=Path("runs/dyga_paired"))
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides added to every cell (smoke tests)")  # fmt: skip
    parser.add_argument("--shard", default="0/1", help="i/n: run every n-th cell from the i-th")
    parser.add_argument("--summarise", action="store_true", help="only summarise finished cells")
    parser.add_argument(
        "--name", default=None, help="results file stem (default dyga_paired_DATASET_full)"
    )
    parser.add_argument("--measure-pull", type=Path, nargs="*", default=None,
                        help="finished run directories: lam / move under both rules")  # fmt: skip
    args = parser.parse_args()
    if args.measure_pull:
        found = [measure_pull(run) for run in args.measure_pull]
        print(json.dumps(found, indent=1))
        (RESULTS / "dyga_pull.json").write_text(json.dumps(found, indent=1))
        return
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    variants = args.arms.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown arm(s) {unknown}; arms: {', '.join(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    cells = grid_cells(variants, seeds)
    i, n = (int(x) for x in args.shard.split("/"))
    if not args.summarise:
        for v, s in cells[i::n]:
            run_cell(v, args.dataset, s, args)
        return
    stem = RESULTS / (args.name or f"dyga_paired_{args.dataset}_full")
    rows, replaced = committed_rows(stem.with_suffix(".json"))
    for v, s in cells:
        done = args.runs / f"{args.dataset}-{v}-seed{s}" / "cell.json"
        if done.is_file():
            rows, replaced = merge_row(rows, replaced, json.loads(done.read_text())["row"])
    summary = summarise(rows, variants, seeds)
    table = markdown(summary, rows, args.dataset, args)
    print(table)
    report = {"args": {k: str(v) for k, v in vars(args).items()}, "variants": VARIANTS,
              "rows": rows, "replaced_rows": replaced, "summary": summary}  # fmt: skip
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1))
    stem.with_suffix(".md").write_text(table)
    if any(e["paired_vs_encdiff"] for e in summary.values()):
        plot(summary, args.dataset, stem.with_suffix(".png"))
    print(f"wrote {stem}.json/.md/.png")


if __name__ == "__main__":
    main()

"""Paired-seed DyGA / Skip Dropout ablation on one encoder (issue 19; successor of ablation.py).

Variants, all at the same image budget (steps x batch 64), pixel-unshuffle first stage (no
autoencoder phase):

* ``encdiff``   -- the ``quickstart`` recipe (EncDiff encoder, scalar units scored);
* ``sd``        -- + Skip Dropout 0.2 on the 8x8 skips;
* ``dyga``      -- + DyGA anchors on the units' tokens (default ``spread`` lam rule);
* ``dyga_sd``   -- + both: the ``quickstart_dyga`` preset;
* ``paper_dyga_sd`` -- the DyGA paper's feature extractor (vector units, per-unit PCA), DyGA
  + SD: ``quickstart_dyga_paper``; a different encoder, reported as its own row;
* ``dyga_official_sd`` -- as ``dyga_sd`` with the released lam formula (``lam_rule=official``).

The four same-encoder variants run first, seed by seed; the other two after them.

Seed s is shared by every variant of a dataset: the same data order, noise and timestep
draws, and (for the same encoder) the same initial weights, so ``variant - encdiff`` at seed
s is a paired difference. The summary reports mean +- std per variant and, per variant, the
per-seed differences to ``encdiff`` with a 95 % percentile-bootstrap interval of their mean
(10,000 resamples, fixed seed).

Each cell is one run directory with ``cell.json`` when finished; a finished cell with the
same settings is reused, so an interrupted grid resumes. ``--shard i/n`` runs every n-th
cell (start n processes for n cores; each uses one thread). ``--summarise`` only reads the
cells and writes JSON + markdown + a plot.

    python benchmarks/dyga_paired.py --dataset quickstart --steps 200 --seeds 0,1,2,3,4 --shard 0/2
    python benchmarks/dyga_paired.py --dataset quickstart --steps 200 --seeds 0,1,2,3,4 --summarise
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
SCORES = ["factorvae/eval_accuracy", "dci/disentanglement", "dci/completeness",
          "dci/informativeness_test", "mig/mig", "sap/sap", "modularity/modularity"]  # fmt: skip
SHORT = {"factorvae/eval_accuracy": "FactorVAE", "dci/disentanglement": "DCI-D",
         "dci/completeness": "DCI-C", "dci/informativeness_test": "DCI-I", "mig/mig": "MIG",
         "sap/sap": "SAP", "modularity/modularity": "Modularity"}  # fmt: skip
VARIANTS = {
    "encdiff": ("quickstart", []),
    "sd": (
        "quickstart",
        ["model.unet.skip_dropout=0.2", "model.unet.skip_dropout_resolutions=[1]"],
    ),
    "dyga": ("quickstart_dyga", ["model.unet.skip_dropout=0.0"]),
    "dyga_sd": ("quickstart_dyga", []),
    "paper_dyga_sd": ("quickstart_dyga_paper", []),
    "dyga_official_sd": ("quickstart_dyga", ["anchoring.lam_rule=official"]),
}
CORE = ("encdiff", "sd", "dyga", "dyga_sd")  # the same encoder; run first, seed by seed
DATASETS = {  # the quick-start data at 32x32; procedural shapes3d at 64x64 (the CPU recipe)
    "quickstart": ["model.first_stage.kind=unshuffle"],
    "shapes3d": ["data.name=shapes3d", "model.first_stage.kind=unshuffle",
                 "model.first_stage.patch_size=8"],
}  # fmt: skip


def cell_config(variant: str, dataset: str, seed: int, steps: int, refits: int):
    from factordiff.config import load_config

    preset, extra = VARIANTS[variant]
    overrides = [*DATASETS[dataset], *extra, f"train.seed={seed}", f"train.max_steps={steps}",
                 f"train.checkpoint_every={steps}", "train.eval_every=0",
                 f"train.log_every={max(1, steps // 20)}",
                 f"anchoring.every_steps={max(1, steps // (refits + 1))}"]  # fmt: skip
    return preset, overrides, load_config(preset, overrides)


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


def run_cell(variant: str, dataset: str, seed: int, args) -> dict:
    import torch

    from factordiff import metrics
    from factordiff.families import load_dataset
    from factordiff.pipeline import FactorDiffusion
    from factordiff.training import train

    run = args.runs / f"{dataset}-{variant}-seed{seed}"
    preset, overrides, cfg = cell_config(variant, dataset, seed, args.steps, args.refits)
    key = {"preset": preset, "overrides": overrides, "eval_scale": args.eval_scale}
    done = run / "cell.json"
    if done.is_file() and json.loads(done.read_text())["key"] == key:
        return json.loads(done.read_text())["row"]
    torch.set_num_threads(1)
    start = time.perf_counter()
    train(cfg, run, progress=False)  # resumes a cell killed mid-training
    train_s = time.perf_counter() - start
    model = FactorDiffusion.from_pretrained(run)
    data = load_dataset(cfg)
    start = time.perf_counter()
    if len(data) <= 50_000:  # quickstart (2,592 images): render and encode each image once
        data = GridImages(data)
        represent = CachedRepresent(model, data)
    else:
        represent = model.represent
    res = metrics.evaluate(represent, data, ["factorvae", "dci", "mig", "sap", "modularity"],
                           0, scale=args.eval_scale, progress=False)  # fmt: skip
    row = {"variant": variant, "dataset": dataset, "seed": seed, "train_s": round(train_s, 1),
           "eval_s": round(time.perf_counter() - start, 1), **metrics.headline(res),
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

    from factordiff.families import load_dataset
    from factordiff.models.anchoring import Anchors
    from factordiff.pipeline import FactorDiffusion

    model = FactorDiffusion.from_pretrained(run)
    data = load_dataset(model.config)
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


def bootstrap_ci(diffs: list[float], n: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile bootstrap interval of the mean of paired differences."""
    d = np.asarray(diffs, dtype=np.float64)
    rs = np.random.RandomState(seed)
    means = d[rs.randint(0, len(d), size=(n, len(d)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def summarise(rows: list[dict], variants: list[str], seeds: list[int]) -> dict:
    by = {(r["variant"], r["seed"]): r for r in rows}
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
            pair = [s for s in have if ("encdiff", s) in by]
            if v != "encdiff" and pair:
                diffs = [by[(v, s)][k] - by[("encdiff", s)][k] for s in pair]
                lo, hi = bootstrap_ci(diffs)
                mean = statistics.mean(diffs)
                entry["paired_vs_encdiff"][k] = {
                    "seeds": pair,
                    "per_seed": diffs,
                    "mean": mean,
                    "ci95": [lo, hi],
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


def markdown(summary: dict, dataset: str, args) -> str:
    lines = [f"Dataset `{dataset}`, {args.steps} steps x batch 64 per run, seeds {args.seeds}, "
             f"metrics at {args.eval_scale} x the protocol's sample counts. "
             "Mean +- std over seeds.",
             "", "| variant | n | " + " | ".join(SHORT[k] for k in SCORES) + " |",
             "|---" * (len(SCORES) + 2) + "|"]  # fmt: skip
    for v, e in summary.items():
        cells = [f"{e['scores'][k]['mean']:.3f} +- {e['scores'][k]['std']:.3f}" for k in SCORES]
        lines.append(f"| {v} | {len(e['seeds'])} | " + " | ".join(cells) + " |")
    lines += ["", "Paired difference to `encdiff` (same seed), mean [95 % bootstrap interval]:", "",
              "| variant | " + " | ".join(SHORT[k] for k in SCORES) + " |",
              "|---" * (len(SCORES) + 1) + "|"]  # fmt: skip
    for v, e in summary.items():
        if not e["paired_vs_encdiff"]:
            continue
        cells = []
        for k in SCORES:
            d = e["paired_vs_encdiff"][k]
            mark = " *" if d["ci95"][0] > 0 or d["ci95"][1] < 0 else ""
            up = sum(x > 0 for x in d["per_seed"])
            cells.append(f"{d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]{mark} "
                         f"{up}/{len(d['per_seed'])}")  # fmt: skip
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    lines += ["", "`*`: the interval excludes 0; k/n: seeds where the variant is ahead. With 5 "
              "seeds a percentile bootstrap interval is narrower than it should be: read it "
              "with the per-seed signs.", "", "What anchoring did (from the runs' logs, "
              "mean over the logged steps after the first refit and over seeds):", "",
              "| variant | lam per unit | move / distance per unit | token zero share "
              "| K per unit (last refit, seed 0) |",
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
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 0.5 + 0.45 * len(variants)))
    for ax, k in zip(axes, keys, strict=True):
        for i, v in enumerate(variants):
            d = summary[v]["paired_vs_encdiff"][k]
            ax.errorbar(d["mean"], i, xerr=[[d["mean"] - d["ci95"][0]], [d["ci95"][1] - d["mean"]]],
                        fmt="o", color="tab:blue", capsize=3)  # fmt: skip
            ax.scatter(d["per_seed"], [i] * len(d["per_seed"]), s=10, color="tab:gray", zorder=0)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(range(len(variants)), variants, fontsize=8)
        ax.set_title(f"{SHORT[k]}: variant - encdiff", fontsize=9)
    fig.suptitle(f"{dataset}: paired differences, 95 % bootstrap intervals (grey: seeds)",
                 fontsize=9)  # fmt: skip
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="quickstart", choices=list(DATASETS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--refits", type=int, default=3, help="anchor refits per run")
    parser.add_argument("--eval-scale", type=float, default=1.0)
    parser.add_argument("--runs", type=Path, default=Path("runs/dyga_paired"))
    parser.add_argument("--shard", default="0/1", help="i/n: run every n-th cell from the i-th")
    parser.add_argument("--summarise", action="store_true", help="only summarise finished cells")
    parser.add_argument(
        "--name", default=None, help="results file stem (default dyga_paired_DATASET)"
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
    variants = args.variants.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    # seed-major over the core variants (whole seeds finish first), the extra ones after
    core = [v for v in variants if v in CORE]
    cells = [(v, s) for s in seeds for v in core]
    cells += [(v, s) for v in variants if v not in CORE for s in seeds]
    i, n = (int(x) for x in args.shard.split("/"))
    rows = []
    for v, s in cells[i::n] if not args.summarise else []:
        rows.append(run_cell(v, args.dataset, s, args))
    if not args.summarise:
        return
    for v, s in cells:
        done = args.runs / f"{args.dataset}-{v}-seed{s}" / "cell.json"
        if done.is_file():
            rows.append(json.loads(done.read_text())["row"])
    summary = summarise(rows, variants, seeds)
    stem = RESULTS / (args.name or f"dyga_paired_{args.dataset}")
    table = markdown(summary, args.dataset, args)
    print(table)
    report = {"args": {k: str(v) for k, v in vars(args).items()}, "variants": VARIANTS,
              "datasets": DATASETS, "rows": rows, "summary": summary}  # fmt: skip
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1))
    stem.with_suffix(".md").write_text(table)
    if any(e["paired_vs_encdiff"] for e in summary.values()):
        plot(summary, args.dataset, stem.with_suffix(".png"))
    print(f"wrote {stem}.json/.md/.png")


if __name__ == "__main__":
    main()

"""DyGA / Skip Dropout ablation at CPU scale: EncDiff, +SD, +DyGA, +DyGA+SD (+ SD rates).

Every variant trains the same small model on the same procedural data for the same number
of steps (the quick-start recipe with a pixel-unshuffle first stage, so no autoencoder
phase, and vector units so DyGA applies), for several seeds, and is scored with the paper
metrics at ``--eval-scale`` x the protocol's sample counts. Prints mean +- std over seeds
and writes JSON + a markdown table.

    python benchmarks/ablation.py [--steps 600] [--seeds 0,1] [--variants encdiff,sd,dyga,dyga_sd]
    python benchmarks/ablation.py --variants sd0.05,sd0.1,sd0.2,sd0.3,sd0.5   # SD sweep
    python benchmarks/ablation.py --variants fsq8,fsq8_sd   # FSQ instead of DyGA
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from factordiff import metrics
from factordiff.config import load_config
from factordiff.data import load_dataset
from factordiff.pipeline import FactorDiffusion
from factordiff.training import train

BASE = [
    "model.first_stage.kind=unshuffle",
    "model.encoder.kind=dyga",
    "model.encoder.channels=32",
    "model.encoder.fc_hidden=[256]",
    "model.unet.skip_dropout_resolutions=[1]",
    "train.eval_every=0",
    "train.log_every=50",
]
SCORES = ["factorvae/eval_accuracy", "dci/disentanglement", "dci/completeness", "mig/mig"]


def variant_overrides(name: str) -> list[str]:
    """``encdiff`` or parts joined by ``_``: ``dyga``, ``sd`` / ``sd0.3`` (Skip Dropout rate,
    0.2 by default), ``fsq`` / ``fsq5`` (FSQ levels per unit, 8 by default)."""
    sd, dyga, fsq = 0.0, False, 0
    for part in name.split("_"):
        if part == "dyga":
            dyga = True
        elif part.startswith("sd"):
            sd = float(part[2:] or 0.2)
        elif part.startswith("fsq"):
            fsq = int(part[3:] or 8)
        elif part != "encdiff":
            raise SystemExit(f"unknown ablation variant part {part!r} in {name!r}")
    return [f"model.unet.skip_dropout={sd}", f"anchoring.enabled={str(dyga).lower()}",
            f"model.encoder.fsq_levels={fsq}"]  # fmt: skip


def unit_factors(mutual_info: list, factor_sizes: tuple, anchors: list) -> list[dict]:
    """Per unit: the factor it informs most (mutual information / factor entropy, uniform
    factors) beside the number of anchors DyGA kept, to compare with the factor's values."""
    mi = torch.tensor(mutual_info) / torch.log(torch.tensor(factor_sizes, dtype=torch.float64))
    best = mi.argmax(dim=1)
    return [{"anchors": anchors[i] if anchors else None, "factor": int(k),
             "factor_values": factor_sizes[k], "normalised_mi": round(float(mi[i, k]), 3)}
            for i, k in enumerate(best.tolist())]  # fmt: skip


def run(name: str, seed: int, steps: int, scale: float, out: Path) -> dict:
    overrides = [*BASE, *variant_overrides(name), f"train.max_steps={steps}",
                 f"train.checkpoint_every={steps}", f"train.seed={seed}",
                 f"anchoring.every_steps={max(1, steps // 4)}"]  # fmt: skip
    cfg = load_config("quickstart", overrides)
    run_dir = out / f"{name}-seed{seed}"
    start = time.perf_counter()
    train(cfg, run_dir, progress=False)
    seconds = time.perf_counter() - start
    model = FactorDiffusion.from_pretrained(run_dir)
    dataset = load_dataset(cfg.data)
    res = metrics.evaluate(
        model.represent, dataset, cfg.eval.metrics, 0, scale=scale, progress=False
    )
    anchors = [u.n_components for u in model.anchors.units] if model.anchors else []
    units = unit_factors(res["mig"]["mutual_info"], dataset.factor_sizes, anchors)
    return {"variant": name, "seed": seed, "train_s": round(seconds, 1), "anchors": anchors,
            "units": units, **metrics.headline(res)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="encdiff,sd,dyga,dyga_sd")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eval-scale", type=float, default=0.2)
    parser.add_argument("--runs", type=Path, default=Path("runs/ablation"))
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "ablation.json"
    )
    args = parser.parse_args()
    rows = [
        run(v, int(s), args.steps, args.eval_scale, args.runs)
        for v in args.variants.split(",")
        for s in args.seeds.split(",")
    ]
    table = [
        "| variant | " + " | ".join(SCORES) + " | anchors per unit |",
        "|---" * (len(SCORES) + 2) + "|",
    ]
    for v in args.variants.split(","):
        mine = [r for r in rows if r["variant"] == v]
        cells = []
        for key in SCORES:
            vals = [r[key] for r in mine]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{statistics.mean(vals):.3f} +- {sd:.3f}")
        table.append(f"| {v} | " + " | ".join(cells) + f" | {mine[0]['anchors'] or '-'} |")
    print("\n".join(table))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"threads": torch.get_num_threads(), "torch": torch.__version__}
    report = {"args": {k: str(v) for k, v in vars(args).items()}, "machine": machine,
              "rows": rows, "table": table}  # fmt: skip
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Training throughput of the real loop (``factordiff.train.train``) per preset.

For each preset: images/s of full training steps (data, forward, backward, AdamW, EMA),
read from the run's own log after warm-up steps, and the share of a step spent fetching
and preparing the batch. The first stage is left untrained (same shapes, same cost).
Prints a table and writes JSON with the machine it ran on.

    python benchmarks/train_throughput.py [--presets quickstart,shapes3d] [--steps 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from factordiff.config import load_config
from factordiff.pipeline import FactorDiffusion
from factordiff.train import StepBatches, load_dataset, refit_anchors, train


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def data_seconds(cfg, model: FactorDiffusion, n: int = 5) -> float:
    dataset = load_dataset(cfg)
    batches = StepBatches(len(dataset), cfg.train.batch_size, cfg.train.seed)
    model.prepare_images(dataset.images_at(batches.rows(0, 0, 1)))  # warm caches
    start = time.perf_counter()
    for step in range(1, n + 1):
        model.prepare_images(dataset.images_at(batches.rows(step, 0, 1)))
    return (time.perf_counter() - start) / n


def measure(preset: str, steps: int, extra: list[str]) -> dict:
    warm = 2
    overrides = [
        f"train.max_steps={warm + steps}", f"train.log_every={warm}", "train.eval_every=0",
        f"train.checkpoint_every={10 * (warm + steps)}", "model.first_stage.train_steps=0",
        *extra,
    ]  # fmt: skip
    cfg = load_config(preset, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, Path(tmp) / "run", progress=False)
        lines = (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()
        log = [json.loads(x) for x in lines]
    rates = [r["images_per_s"] for r in log if "images_per_s" in r][1:]  # drop warm-up
    rate = statistics.median(rates)
    model = FactorDiffusion(load_config(preset, overrides))
    step_s = cfg.train.batch_size / rate
    data_s = data_seconds(cfg, model)
    anchor = {}
    if cfg.anchoring.enabled:  # one DyGA refit against the training time between refits
        start = time.perf_counter()
        refit_anchors(model, load_dataset(cfg), cfg, step=1)
        fit_s = time.perf_counter() - start
        dataset_len = len(load_dataset(cfg))
        every = cfg.anchoring.every_steps or cfg.anchoring.every_epochs * (
            dataset_len // cfg.train.batch_size
        )
        anchor = {
            "anchor_fit_s": round(fit_s, 2),
            "anchor_share": round(fit_s / (fit_s + every * step_s), 4),
        }
    return {
        "preset": preset,
        "batch_size": cfg.train.batch_size,
        "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "latent": list(model.latent_shape),
        "images_per_s": round(rate, 1),
        "step_s": round(step_s, 3),
        "data_share": round(data_s / step_s, 4),
        **anchor,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="quickstart,quickstart_dyga,shapes3d")
    parser.add_argument("--steps", type=int, default=6, help="timed steps after 2 warm-up steps")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "train_throughput.json"
    )
    parser.add_argument("overrides", nargs="*", help="key=value applied to every preset")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [measure(p, args.steps, args.overrides) for p in args.presets.split(",")]
    machine = {
        "cpu": cpu_name(), "cores": os.cpu_count(), "threads": args.threads,
        "device": "cuda" if torch.cuda.is_available() else "cpu", "torch": torch.__version__,
    }  # fmt: skip
    print(f"machine: {machine}")
    header = [
        "preset",
        "batch_size",
        "parameters_m",
        "latent",
        "images_per_s",
        "step_s",
        "data_share",
    ]
    header += ["anchor_fit_s", "anchor_share"]
    print(" | ".join(header))
    for row in rows:
        print(" | ".join(str(row.get(h, "-")) for h in header))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

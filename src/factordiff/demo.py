"""The quick start: the steps a new user sees end to end, on the embedded dataset.

Stage 1 (data) is complete: resolve the ``quickstart`` preset, write the run directory
with its ``config.yaml``, render the dataset and a factor grid, check the torch path.
The model stages (train, evaluate, report) are added by the model issue; until then the
demo stops after the data stage and says so.
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from factordiff.config import load_config, save_config
from factordiff.data import load
from factordiff.data.loader import make_loader
from factordiff.viz import save_factor_sweep


def run_demo(out: Path, console: Console) -> None:
    cfg = load_config("quickstart")
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    console.rule("factordiff quick start")
    console.print(f"run directory: {out}  (config: {out / 'config.yaml'})")

    start = time.perf_counter()
    dataset = load(cfg.data.name)
    console.print(f"[bold]data[/] {dataset!r}")
    grid = save_factor_sweep(dataset, out / "data_factors.png")
    console.print(f"  factor grid: {grid}")
    loader = make_loader(dataset, cfg.train.batch_size, seed=cfg.train.seed)
    n_images = 0
    for batch in loader:
        n_images += len(batch["image"])
    elapsed = time.perf_counter() - start
    console.print(
        f"  one epoch through the torch loader: {n_images} images, batch "
        f"{tuple(batch['image'].shape)}, range [{batch['image'].min():.2f}, "
        f"{batch['image'].max():.2f}], {n_images / elapsed:,.0f} images/s"
    )
    console.print(
        "[yellow]Model stages (train, evaluate, report) are not in this version yet: "
        "the quick start ends after the data stage.[/]"
    )

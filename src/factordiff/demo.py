"""The quick start (``factordiff demo`` / ``make demo``): every stage a user meets, on a CPU.

1. data: the embedded ``quickstart`` dataset and a factor grid;
2. training: a short run of ``factordiff train quickstart`` from scratch, to show the loop
   (loss falling, images/s, checkpoint) -- disentanglement takes longer than a demo;
3. the quick-start model: a checkpoint trained by the same recipe for longer (shipped in
   the package, with its command, seed and training log), scored with the paper metrics,
   with a reconstruction grid and a latent-interchange grid.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from factordiff.config import load_config
from factordiff.data import load
from factordiff.shipped import SHIPPED_DIR, refuse_package_write
from factordiff.viz import save_factor_sweep

PRETRAINED = SHIPPED_DIR / "quickstart"
DEMO_TRAIN_STEPS = 100
#: Share of the protocol's sample counts in the demo: the full protocol, ~30 s on 2 cores
#: since evaluation encodes each distinct image once.
DEMO_EVAL_SCALE = 1.0


def run_demo(
    out: Path,
    console: Console,
    train_steps: int = DEMO_TRAIN_STEPS,
    eval_scale: float = DEMO_EVAL_SCALE,
    model_dir: Path = PRETRAINED,
    sample_steps: int | None = None,
) -> dict:
    """Run the quick start into ``out``; returns the metric results of the model.
    ``sample_steps``: DDIM steps of its images (default: the recipe's); the figures are most
    of the demo's time after training."""
    from factordiff import metrics
    from factordiff.metrics.evaluate import results_to_json
    from factordiff.pipeline import FactorDiffusion
    from factordiff.training import train
    from factordiff.viz import save_reconstruction_grid, save_swap_grid
    from factordiff.viz.report import load_json, write_report

    start = time.perf_counter()
    refuse_package_write(out, "the quick start")
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config("quickstart")
    steps = sample_steps or cfg.diffusion.sample_steps
    console.rule("factordiff quick start")
    dataset = load(cfg.data.name)
    console.print(f"[bold]1. data[/] {dataset!r}")
    files = {"factor grid": save_factor_sweep(dataset, out / "data_factors.png")}

    console.print(
        f"[bold]2. training[/] `factordiff train quickstart`, shortened: {train_steps} "
        f"autoencoder steps, then {train_steps} diffusion steps"
    )
    run = out / "train"
    shutil.rmtree(run, ignore_errors=True)  # the demo's own scratch run: start it afresh
    short = load_config(
        "quickstart",
        [f"train.max_steps={train_steps}", "train.eval_every=0",
         f"train.log_every={max(1, train_steps // 20)}",
         f"train.checkpoint_every={train_steps}", f"model.first_stage.train_steps={train_steps}"],
    )  # fmt: skip
    files["short run"] = train(short, run).parent.parent
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in log if "loss" in r]
    console.print(
        f"  loss {losses[0]['loss']:.3f} (step {losses[0]['step']}) -> {losses[-1]['loss']:.3f} "
        f"(step {losses[-1]['step']}), {losses[-1]['images_per_s']:.0f} images/s"
    )

    if (model_dir / "model.safetensors").is_file():
        model = FactorDiffusion.from_pretrained(model_dir)
        source = (
            f"the quick-start model in {model_dir} (how it was trained: {model_dir / 'README.md'})"
        )
    else:
        model = FactorDiffusion.from_pretrained(run)
        source = f"the short run above ({model_dir} is missing: expect no disentanglement)"
    console.print(f"[bold]3. model[/] {source}")
    results = metrics.evaluate(
        model.represent, dataset, cfg.eval.metrics, cfg.eval.seed, scale=eval_scale
    )
    (out / "eval.json").write_text(results_to_json(results))
    files["metrics"] = out / "eval.json"
    files["reconstructions"] = save_reconstruction_grid(
        model, dataset, out / "reconstructions.png", steps=steps
    )
    files["latent interchange"] = save_swap_grid(model, dataset, out / "swap.png", steps=steps)
    console.print("[bold]4. report[/] figures, metrics and how to reproduce, in one HTML file")
    shipped_log = model_dir / "train_log.jsonl"  # the shipped model's training curves
    files["report"] = write_report(
        model, dataset, model_dir if shipped_log.is_file() else run, out / "report.html",
        results=results, steps=steps,
        metrics_log=shipped_log if shipped_log.is_file() else None, log=lambda m: None,
        downstream=load_json(model_dir / "downstream.json"),  # measured with the model
        interchange=load_json(model_dir / "interchange.json"),
        companion_run=run if shipped_log.is_file() else None,
    )  # fmt: skip

    table = Table(title=f"quick-start model on {dataset.name}")
    table.add_column("metric")
    table.add_column(f"now (protocol x {eval_scale})", justify="right")
    shipped = model_dir / "eval.json"
    full = metrics.headline(json.loads(shipped.read_text())) if shipped.is_file() else {}
    if full:
        table.add_column("shipped eval.json (full protocol)", justify="right")
    for key, value in metrics.headline(results).items():
        shipped_cell = [f"{full[key]:.3f}" if key in full else "-"] if full else []
        table.add_row(key, f"{value:.3f}", *shipped_cell)
    console.print(table)
    files_table = Table(title="files")
    files_table.add_column("what")
    files_table.add_column("where")
    for what, path in files.items():
        files_table.add_row(what, str(path))
    console.print(files_table)
    console.print(f"quick start finished in {time.perf_counter() - start:.0f} s")
    name = "quickstart" if model_dir == PRETRAINED else str(model_dir)
    console.print(
        "next: open the report in a browser; every command takes the shipped model by name "
        f"or your run's folder:\n  factordiff eval {name}          # full protocol, ~30 s"
        f"\n  factordiff swap {name} --out swap.png\n  factordiff report {run}   "
        "# the demo's short run (not disentangled yet)",
        markup=False,
    )
    return results

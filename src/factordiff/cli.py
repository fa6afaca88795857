"""The ``factordiff`` command line (typer + rich).

Errors a user can cause are ``FactordiffError``s: ``main`` prints them as one red line
and exits with status 1, so nobody has to read a traceback to learn which file was wrong.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from factordiff import __version__
from factordiff.errors import FactordiffError

app = typer.Typer(
    help="Disentangled representation learning with diffusion models (EncDiff, DyGA + SD).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="List, inspect and download datasets.", no_args_is_help=True)
config_app = typer.Typer(help="Show presets and resolved configs.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")
console = Console()
err_console = Console(stderr=True, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        console.print(f"factordiff {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True),
) -> None:
    """factordiff: train, evaluate and inspect disentangling diffusion models."""


@data_app.command("list")
def data_list() -> None:
    """Datasets: factors, sizes and where the images come from."""
    from factordiff.data.registry import DATASETS

    table = Table(title="factordiff datasets")
    for col in ("name", "factors (classes)", "images", "source", "files (for --root)"):
        table.add_column(col)
    for spec in DATASETS.values():
        factors = ", ".join(
            f"{n} {s}" for n, s in zip(spec.factor_names, spec.factor_sizes, strict=True)
        )
        count = 1
        for s in spec.factor_sizes:
            count *= s
        table.add_row(
            spec.name,
            factors or "from factors.csv",
            f"{count:,}" if spec.factor_sizes else "any",
            spec.source,
            spec.files_hint or "-",
        )
    console.print(table)


@data_app.command("show")
def data_show(
    name: str = typer.Argument(..., help="Dataset name (see `factordiff data list`)."),
    root: Path | None = typer.Option(None, help="Folder with the published files."),
    out: Path = typer.Option(Path("grid.png"), help="PNG to write."),
    cols: int = typer.Option(8, min=1, help="Values shown per factor."),
    seed: int = typer.Option(0, min=0, help="Seed of the fixed base configuration."),
) -> None:
    """Write a grid that walks each factor across its range, the others fixed."""
    from factordiff.data import load
    from factordiff.viz import save_factor_sweep

    if out.suffix.lower() != ".png" or out.is_dir():
        raise FactordiffError(f"--out must be a .png file path, got {out}")
    dataset = load(name, root=root)
    console.print(repr(dataset))
    path = save_factor_sweep(dataset, out, n_cols=cols, seed=seed)
    console.print(f"wrote {path}")


@data_app.command("prepare")
def data_prepare(
    name: str = typer.Argument(..., help="Dataset name."),
    root: Path = typer.Option(..., help="Folder to download into."),
    mirror: str | None = typer.Option(
        None, help="Base URL replacing the canonical host (also env FACTORDIFF_MIRROR)."
    ),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Download the published files (resumable, checksum-verified) and unpack them."""
    from factordiff.data.download import prepare

    path = prepare(name, root, progress=progress, base_url=mirror)
    console.print(
        f"{name} ready in {path}; load it with fd.data.load({name!r}, root={str(root)!r})"
    )


@config_app.command("presets")
def config_presets() -> None:
    """The bundled presets."""
    from factordiff.config import preset_names

    for name in preset_names():
        console.print(name)


@config_app.command("show")
def config_show(
    preset: str = typer.Argument("shapes3d", help="Preset name or YAML file."),
    overrides: list[str] | None = typer.Argument(None, help="key=value overrides."),
) -> None:
    """Print the resolved config (defaults <- preset <- overrides) as YAML."""
    import yaml

    from factordiff.config import load_config

    cfg = load_config(preset, overrides or [])
    console.print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="", markup=False)


@app.command("metrics")
def metrics_command(
    codes_file: Path = typer.Argument(
        ..., help=".npz with codes, factors (+ optional test split)."
    ),
    metrics: str = typer.Option("dci,mig,sap,modularity", help="Comma-separated metrics."),
    backend: str = typer.Option(
        "lightgbm", help="DCI trees: lightgbm (fast) or sklearn (reference)."
    ),
    train_fraction: float = typer.Option(2 / 3, help="Train share when no codes_test is given."),
    out: Path | None = typer.Option(None, help="Write all results as JSON here."),
) -> None:
    """Score saved codes of any model with the array metrics (DCI, MIG, SAP, Modularity, TAD)."""
    import json

    from factordiff.metrics.codes_file import load_codes, score_codes
    from factordiff.metrics.evaluate import HEADLINE

    data = load_codes(codes_file, train_fraction)
    names = [m.strip() for m in metrics.split(",") if m.strip()]
    results = score_codes(data, names, dci_backend=backend)
    table = Table(title=f"{codes_file.name}: {results['n_train']} train / {results['n_test']} test")
    for col in ("metric", "score", "value", "seconds"):
        table.add_column(col)
    for name in names:
        res = results[name.lower()]
        for key in HEADLINE[name.lower()]:
            value = res[key]
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            table.add_row(name, key, shown, f"{res['seconds']:.2f}")
    console.print(table)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, default=_jsonable))
        console.print(f"wrote {out}")


def _jsonable(value: object) -> object:
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Run directory of the quick start."),
) -> None:
    """The quick start on the embedded procedural dataset (CPU, minutes)."""
    from factordiff.demo import run_demo

    run_demo(out, console)


def main() -> None:
    """Console-script entry point: user errors become one line and a non-zero exit."""
    try:
        app()
    except FactordiffError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()

"""The ``factordiff`` command line (typer + rich).

Errors a user can cause are ``FactordiffError``s: ``main`` prints them as one red line
and exits with status 1, so nobody has to read a traceback to learn which file was wrong.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from factordiff._version import __version__
from factordiff.errors import FactordiffError
from factordiff.metric_registry import METRICS as _METRICS

METRIC_NAMES = tuple(n for n, m in _METRICS.items() if m.inputs != "generation")  # of codes

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
MODEL_HELP = "Run directory, save_pretrained folder, or shipped model name (quickstart)."
err_console = Console(stderr=True, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        console.print(f"factordiff {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, metavar="", help="Print the version."
    ),
) -> None:
    """factordiff: train, evaluate and inspect disentangling diffusion models."""


@data_app.command("list")
def data_list() -> None:
    """Datasets: factors, sizes and where the images come from."""
    from factordiff.data.registry import DATASETS

    table = Table(title="factordiff datasets")
    for col in ("name", "factors (classes)", "images", "source"):
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
        )
    console.print(table)
    # file names are what a user copies: printed whole, never cut to the terminal's width
    console.print("files a root folder must hold (--root DIR, or data.root=DIR in training):")
    for spec in DATASETS.values():
        if spec.files_hint:
            console.print(f"  {spec.name}: {spec.files_hint}", markup=False, soft_wrap=True)


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


@config_app.command("diff")
def config_diff_command(
    a: str = typer.Argument(..., help="Preset name, YAML file or run folder."),
    b: str = typer.Argument(..., help="Preset name, YAML file or run folder."),
) -> None:
    """The settings whose resolved values differ between two presets, YAML files or runs."""
    from rich.table import Table

    from factordiff.config import config_diff, load_config

    differ = config_diff(load_config(a), load_config(b))
    if not differ:
        console.print(f"{a} and {b} resolve to the same config", markup=False)
        return
    table = Table("setting", a, b, title=f"{len(differ)} settings differ")
    for key, (value_a, value_b) in differ.items():
        table.add_row(key, repr(value_a), repr(value_b))
    console.print(table)


@app.command("metrics")
def metrics_command(
    codes_file: Path = typer.Argument(
        ..., help=".npz with codes, factors (+ optional test split)."
    ),
    metrics: str = typer.Option(
        "dci,mig,sap,modularity,infomec",
        help="Comma-separated, any of: " + ", ".join(METRIC_NAMES) + ".",
    ),
    backend: str = typer.Option(
        "lightgbm", help="DCI trees: lightgbm (fast) or sklearn (reference)."
    ),
    train_fraction: float = typer.Option(
        2 / 3, help="Train share when no codes_test is given.", show_default="2/3"
    ),
    out: Path | None = typer.Option(None, help="Write all results as JSON here."),
) -> None:
    """Score saved codes of any model: DCI, MIG, SAP, Modularity, InfoMEC, TAD, and
    FactorVAE / beta-VAE when the file covers the factor grid or every factor value."""
    from factordiff.metrics.codes_file import load_codes, score_codes

    data = load_codes(codes_file, train_fraction)
    names = [m.strip() for m in metrics.split(",") if m.strip()]
    results = score_codes(data, names, dci_backend=backend)
    console.print(
        _score_table(
            results,
            names,
            f"{codes_file.name}: {results['n_train']} train / {results['n_test']} test",
        )
    )
    for name in ("factorvae", "betavae"):
        if name in results:
            console.print(f"{name} batches: {results[name]['sampling']}", markup=False)
    if out is not None:
        _write_json(out, results)


def _score_table(results: dict, names: list[str], title: str) -> Table:
    from factordiff.metric_registry import METRICS, normalise

    table = Table(title=title)
    for col in ("metric", "score", "value", "seconds"):
        table.add_column(col)
    for name in names:
        res = results[normalise(name)]
        for key in METRICS[normalise(name)].headline:
            value = res[key]
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            table.add_row(name, key, shown, f"{res['seconds']:.2f}")
    return table


def _write_json(out: Path, results: dict) -> None:
    from factordiff.metrics.evaluate import results_to_json

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(results_to_json(results))
    console.print(f"wrote {out}")


@app.command()
def train(
    config: str = typer.Argument(
        ..., help="Preset name (see `factordiff config presets`) or YAML."
    ),
    overrides: list[str] | None = typer.Argument(None, help="key=value overrides."),
    out: Path = typer.Option(..., "--out", help="Run directory; resumes if it has a checkpoint."),
) -> None:
    """Train a model (first stage, then encoder + U-Net); resumes from OUT's newest checkpoint.

    For several processes or GPUs: accelerate launch -m factordiff.cli train ...
    """
    from factordiff.config import load_config
    from factordiff.shipped import refuse_package_write

    refuse_package_write(out, "a training run")  # before the training code is imported
    from factordiff.training import train as run_training

    ckpt = run_training(load_config(config, overrides or []), out)
    console.print(f"done: {ckpt}\nload it with fd.load_pretrained({str(out)!r})")


@app.command("eval")
def eval_command(
    run_dir: Path = typer.Argument(..., help=MODEL_HELP),
    metrics: str | None = typer.Option(
        None, help="Comma-separated; default: the run's eval.metrics."
    ),
    scale: float = typer.Option(
        1.0, help="Share of the protocol's sample counts (1.0 = published)."
    ),
    backend: str = typer.Option(
        "lightgbm", help="DCI trees: lightgbm (fast) or sklearn (reference)."
    ),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, mps ..."),
    representation: str | None = typer.Option(
        None,
        help="auto | scalars | pca | flatten (default: the run's eval.representation); pca "
        "scores the per-unit PCA of the tokens the U-Net sees (moved by token anchors), as "
        "the DyGA evaluation does.",
    ),
    out: Path | None = typer.Option(None, help="JSON path (default RUN_DIR/eval.json)."),
) -> None:
    """Score a trained model with the paper protocol (disentanglement_lib settings)."""
    from factordiff.choices import CHOICES
    from factordiff.metric_registry import normalise

    model, dataset, json_out = _load_run(run_dir, device, "eval.json", out)
    from factordiff import metrics as fd_metrics

    cfg = model.config
    if representation is not None:
        if representation not in CHOICES["eval.representation"]:
            raise typer.BadParameter(
                f"--representation must be one of {', '.join(CHOICES['eval.representation'])}"
            )
        cfg.eval.representation = representation
    names = [m.strip() for m in metrics.split(",")] if metrics else list(cfg.eval.metrics)
    results = fd_metrics.evaluate(
        model.represent, dataset, names, cfg.eval.seed,
        representation=cfg.eval.representation, dci_backend=backend, scale=scale,
    )  # fmt: skip
    results["protocol"]["represents"] = model.representation_of
    console.print(f"scored: {results['protocol']['represents']}", markup=False)
    for name, why in results["protocol"].get("not_scored", {}).items():
        console.print(f"not scored: {name} -- {why}", markup=False)
    scored = [n for n in names if normalise(n) in results]
    console.print(_score_table(results, scored, f"{run_dir}: {cfg.data.name}, scale {scale}"))
    cache = results["protocol"]["codes_cache"]
    if cache["used"]:
        console.print(
            f"codes: {cache['images_encoded']} distinct images of {cache['dataset_images']} "
            f"encoded once ({cache['encode_seconds']:.1f} s) for "
            f"{cache['codes_requested']} protocol draws",
            markup=False,
        )
    else:
        console.print(f"codes: {cache['reason']}", markup=False)
    _write_json(json_out, results)


def _load_run(run_dir: Path, device: str, filename: str, out: Path | None):
    """The model, its dataset and where the command's output goes. The model folder and
    the output path are resolved and checked first -- a wrong path or an output inside the
    installed package fails in a second, not after the model is loaded and the work done.
    The output is ``out``, or ``filename`` beside the model (``runs/<name>/`` for a shipped,
    read-only model)."""
    from factordiff.shipped import output_path, resolve_model

    model_dir = resolve_model(run_dir)
    path, note = output_path(model_dir, filename, out)
    if filename.endswith(".png") and path.suffix.lower() != ".png":
        raise FactordiffError(f"--out must be a .png file path, got {path}")
    from factordiff.data import load_dataset
    from factordiff.pipeline import load_pretrained

    model = load_pretrained(model_dir, device=device)
    if note:
        console.print(note)
    return model, load_dataset(model.config.data), path


def _model_dir(model) -> Path:
    """The folder the model was loaded from (``from_pretrained`` resolved it once)."""
    return Path(model.provenance["path"])


@app.command()
def swap(
    run_dir: Path = typer.Argument(..., help=MODEL_HELP),
    out: Path | None = typer.Option(
        None, help="PNG to write (default RUN_DIR/swap.png; runs/NAME/ for a shipped model)."
    ),
    pairs: int = typer.Option(4, help="Number of (source, target) pairs (rows)."),
    steps: int = typer.Option(100, help="DDIM steps (fewer is faster, blurrier)."),
    seed: int = typer.Option(0, help="Picks the pairs and the DDIM noise."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:1, mps ..."),
) -> None:
    """Latent interchange: the source with unit k taken from the target, for every k."""
    model, dataset, png = _load_run(run_dir, device, "swap.png", out)
    from factordiff.viz import save_swap_grid

    console.print(f"wrote {save_swap_grid(model, dataset, png, pairs, steps, seed)}")


@app.command()
def traverse(
    run_dir: Path = typer.Argument(..., help=MODEL_HELP),
    out: Path | None = typer.Option(
        None, help="PNG to write (default RUN_DIR/traverse.png; runs/NAME/ for a shipped model)."
    ),
    over: str = typer.Option("data", help="data (quantiles of each unit) or anchors (DyGA)."),
    n_steps: int = typer.Option(7, help="Values per unit (data mode)."),
    index: int | None = typer.Option(None, help="Dataset index of the image (default: seeded)."),
    steps: int = typer.Option(100, help="DDIM steps."),
    seed: int = typer.Option(0),
    device: str = typer.Option("cpu"),
) -> None:
    """Per unit, walk its value across the data's range (or its anchors), rest fixed."""
    if over not in ("data", "anchors"):
        raise FactordiffError(f"--over must be data or anchors, got {over!r}")
    model, dataset, png = _load_run(run_dir, device, "traverse.png", out)
    from factordiff.viz import save_traverse_grid

    if over == "anchors" and model.anchors is None:
        raise FactordiffError(f"{run_dir} has no DyGA anchors; use --over data")
    if index is not None and not 0 <= index < len(dataset):
        raise FactordiffError(f"--index must be in [0, {len(dataset)}), got {index}")
    path = save_traverse_grid(model, dataset, png, n_steps, over, steps, seed, index)
    console.print(f"wrote {path}")


@app.command()
def interchange(
    run_dir: Path = typer.Argument(..., help=MODEL_HELP),
    pairs: int = typer.Option(32, help="(source, target) pairs; every unit is swapped."),
    steps: int = typer.Option(50, help="DDIM steps per generated image."),
    seed: int = typer.Option(0),
    device: str = typer.Option("cpu"),
    out: Path | None = typer.Option(None, help="JSON path (default RUN_DIR/interchange.json)."),
) -> None:
    """Quantitative interchange: which factors change when unit k is swapped."""
    model, dataset, json_out = _load_run(run_dir, device, "interchange.json", out)
    from factordiff.interchange import interchange_score

    res = interchange_score(model, dataset, pairs, steps, seed)
    table = Table(title=f"{run_dir}: exactly one factor changed in {res['exactly_one']:.3f}")
    for col in ["unit", *res["factor_names"], "exactly one"]:
        table.add_column(col)
    for k, shares in enumerate(res["per_unit_changed_share"]):
        cells = [f"{v:.2f}" for v in [*shares, res["per_unit_exactly_one"][k]]]
        table.add_row(str(k), *cells)
    regen = res["classifier_accuracy_on_regenerations"]
    table.add_section()
    table.add_row("classifier acc. on regen.", *[f"{regen[n]:.2f}" for n in res["factor_names"]],
                  f"mean {res['classifier_accuracy_on_regenerations_mean']:.2f}")  # fmt: skip
    console.print(table)
    console.print(
        "Classifier accuracy on regenerations: its predictions on the unswapped "
        "regenerations against the sources' true factors. Factors whose classifier accuracy "
        "on regenerations is low give unreliable changed-shares (predictions flip between "
        "two generations by chance)."
    )
    _write_json(json_out, res)


@app.command()
def downstream(
    run_dir: Path = typer.Argument(..., help=MODEL_HELP),
    sizes: str = typer.Option("10000,1000,100", help="Training sizes, comma-separated."),
    num_test: int = typer.Option(5000, help="Test points per size."),
    baseline: str = typer.Option("pixels", help="pixels (8x8 downsampled) or none."),
    backend: str = typer.Option("lightgbm", help="lightgbm (fast) or sklearn (reference)."),
    seed: int = typer.Option(0),
    device: str = typer.Option("cpu"),
    out: Path | None = typer.Option(None, help="JSON path (default RUN_DIR/downstream.json)."),
) -> None:
    """Gradient boosted trees on the units predict each factor from 10000 / 1000 / 100
    examples (DyGA paper, disentanglement_lib downstream task), beside a baseline."""
    try:
        train_sizes = tuple(int(s) for s in sizes.split(","))
    except ValueError:
        raise FactordiffError(
            f"--sizes must be integers separated by commas, got {sizes!r}"
        ) from None
    if baseline not in ("pixels", "none"):
        raise FactordiffError(f"--baseline must be pixels or none, got {baseline!r}")
    model, dataset, json_out = _load_run(run_dir, device, "downstream.json", out)
    from factordiff.metrics.downstream import downsampled_pixels, downstream_results
    from factordiff.viz.plots import save_downstream_plot

    baselines = {"pixels 8x8": downsampled_pixels(8)} if baseline == "pixels" else {}
    res = downstream_results(model, dataset, baselines, seed, train_sizes, num_test, backend)
    first = next(iter(res.values()))
    table = Table(title=f"{run_dir}: downstream mean test accuracy ({dataset.name})")
    for col in ["representation", *[f"acc@{n}" for n in train_sizes], *first["sample_efficiency"]]:
        table.add_column(col)
    for name, r in res.items():
        cells = [r["accuracy"][n] for n in train_sizes] + list(r["sample_efficiency"].values())
        table.add_row(name, *[f"{v:.3f}" for v in cells])
    console.print(table)
    _write_json(json_out, res)
    console.print(f"wrote {save_downstream_plot(res, json_out.with_suffix('.png'))}")


@app.command("udr")
def udr_command(
    runs: list[Path] = typer.Argument(..., help="Two or more runs (" + MODEL_HELP + ")"),
    images: int = typer.Option(1000, help="Images every run encodes (disentanglement_lib: 1000)."),
    correlation: str = typer.Option("lasso", help="lasso (UDR_L, the default) or spearman."),
    seed: int = typer.Option(0, help="Seed of the image draw."),
    device: str = typer.Option("cpu"),
    out: Path = typer.Option(Path("udr.json"), help="JSON path."),
) -> None:
    """Rank runs without labels: UDR (Duan et al. 2020, disentanglement_lib's definition)
    scores each run by how well the other runs' units match its own on the same images."""
    from factordiff.selection import ranking_rows, udr_of_runs

    if correlation not in ("lasso", "spearman"):
        raise FactordiffError(f"--correlation must be lasso or spearman, got {correlation!r}")
    res = udr_of_runs(list(runs), images, correlation, seed, device)
    d = res["dataset"]
    table = Table(title=f"UDR ({correlation}) on {d['images']} images of {d['name']}, best first")
    for col in ("rank", "run", "UDR", "active units"):
        table.add_column(col)
    for rank, run, score, active in ranking_rows(res):
        table.add_row(str(rank), run, f"{score:.3f}", active)
    console.print(table)
    console.print(f"active units: {res['activity_rule']}", markup=False)
    _write_json(out, res)


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help=MODEL_HELP),
    out: Path | None = typer.Option(None, help="HTML path (default RUN_DIR/report.html)."),
    steps: int = typer.Option(50, help="DDIM steps of the generated figures."),
    scale: float | None = typer.Option(
        None, help="Evaluate now at this protocol share when RUN_DIR/eval.json is missing."
    ),
    interchange_pairs: int = typer.Option(
        0, help="Compute the interchange score with this many pairs (0: use interchange.json)."
    ),
    udr_with: list[Path] = typer.Option(
        [],
        "--udr-with",
        help="Rank this run by UDR against these runs (repeat the option); "
        "without it, a udr.json beside the report, the run or its folder that lists the run.",
    ),  # fmt: skip
    udr_images: int = typer.Option(1000, help="Images each run encodes for --udr-with."),
    device: str = typer.Option("cpu"),
) -> None:
    """One self-contained report.html: config, curves, metrics, figures, reproduction."""
    model, dataset, html_out = _load_run(run_dir, device, "report.html", out)
    from factordiff import metrics as fd_metrics
    from factordiff.interchange import interchange_score
    from factordiff.viz.report import load_json, write_report

    model_dir = _model_dir(model)

    def saved(name: str) -> dict | None:
        """A result file beside the report (e.g. runs/quickstart/eval.json, newest) or
        beside the model."""
        return load_json(html_out.parent / name) or load_json(model_dir / name)

    results = saved("eval.json")
    if results is None and scale is not None:
        cfg = model.config
        results = fd_metrics.evaluate(
            model.represent, dataset, cfg.eval.metrics, cfg.eval.seed,
            representation=cfg.eval.representation, scale=scale,
        )  # fmt: skip
    swaps = saved("interchange.json")
    if interchange_pairs:
        swaps = interchange_score(model, dataset, interchange_pairs, steps)
    if udr_with:
        from factordiff.selection import udr_of_runs

        udr = udr_of_runs([model_dir, *udr_with], udr_images, device=device)
        _write_json(html_out.parent / "udr.json", udr)
    else:
        udr = _udr_listing(model_dir, [html_out.parent, model_dir, model_dir.parent, Path()])
    path = write_report(
        model, dataset, model_dir, html_out, results=results,
        downstream=saved("downstream.json"), interchange=swaps, steps=steps, udr=udr,
        log=lambda m: console.print(m, markup=False),
    )  # fmt: skip
    console.print(f"wrote {path}")


def _udr_listing(model_dir: Path, folders: list[Path]) -> dict | None:
    """The first ``udr.json`` in ``folders`` whose runs include ``model_dir``."""
    from factordiff.viz.report import load_json

    here = model_dir.resolve()
    for folder in folders:
        try:
            found = load_json(folder / "udr.json")
            if found and any(Path(r).resolve() == here for r in found["runs"]):
                return found
        except (ValueError, KeyError, TypeError):  # not a udr.json of ours: look on
            continue
    return None


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Run directory of the quick start."),
    train_steps: int = typer.Option(100, help="Steps of each phase of the short training."),
    eval_scale: float = typer.Option(1.0, help="Share of the metric protocol's sample counts."),
    sample_steps: int = typer.Option(
        0, min=0, help="DDIM steps of the images (0: the recipe's 50; fewer is faster, rougher)."
    ),
) -> None:
    """The quick start on the embedded procedural dataset (CPU, minutes)."""
    from factordiff.demo import run_demo

    run_demo(out, console, train_steps=train_steps, eval_scale=eval_scale,
             sample_steps=sample_steps or None)  # fmt: skip


def main() -> None:
    """Console-script entry point: user errors become one line and a non-zero exit."""
    try:
        app()
    except FactordiffError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(getattr(exc, "exit_code", 1))  # 128 + signal after a pre-emption


if __name__ == "__main__":
    main()

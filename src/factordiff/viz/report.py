"""``factordiff report RUN``: one self-contained ``report.html`` for a trained run.

Everything is embedded (PNG figures as data URIs, no scripts, no network), so the file
can be mailed or attached to a paper's supplement and opens in any browser. Sections:
config, training curves, metrics with the protocol settings, reconstructions, latent
interchange (grid and score), traversals, the DCI importance heatmap, unit histograms and
anchors, cross-attention maps, downstream accuracy, and how to reproduce the run.
"""

from __future__ import annotations

import base64
import html
import json
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import yaml

from factordiff._version import __version__
from factordiff.metrics.evaluate import HEADLINE
from factordiff.metrics.representation import UnitPCA
from factordiff.selection import ranking_rows
from factordiff.viz import grids, plots
from factordiff.viz.attention_maps import save_attention_figure

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .5em 0; } td, th { border: 1px solid #ccc;
padding: .25em .6em; text-align: right; } th { background: #f4f4f4; }
img { max-width: 100%; } pre { background: #f7f7f7; padding: .8em; overflow-x: auto; }
.note { color: #555; font-size: .92em; }
"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        return f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table>{f'<tr>{head}</tr>' if header else ''}{body}</table>"


def _metrics_section(results: dict) -> str:
    rows = []
    for name, keys in HEADLINE.items():
        if name in results:
            rows += [[name, k, results[name][k]] for k in keys if k in results[name]]
    protocol = results.get("protocol", {})
    note = (f"Protocol: seed {protocol.get('seed')}, representation "
            f"{protocol.get('representation')}, scale {protocol.get('scale')} of the "
            "disentanglement_lib sample counts (1.0 is comparable with published tables), "
            f"DCI trees: {protocol.get('dci_backend')}.")  # fmt: skip
    sizes = protocol.get("sizes", {})
    size_rows = [[m, ", ".join(f"{k}={v}" for k, v in s.items())] for m, s in sizes.items()]
    return (_table(["metric", "score", "value"], rows) + f"<p class='note'>{html.escape(note)}</p>"
            + _table(["metric", "sample sizes"], size_rows))  # fmt: skip


NO_LABELS_NOTE = (
    "This dataset has no factor labels (an image folder without factors.csv), so no "
    "supervised metric can be computed. To choose among several runs on it, rank them by "
    "UDR, which needs no labels: factordiff udr RUN OTHER_RUN ..., or "
    "factordiff report RUN --udr-with OTHER_RUN (the section below)."
)


def _udr_section(udr: dict, run_dir: Path) -> str:
    """The runs ``factordiff udr`` ranked together with this one, this run marked."""
    here = run_dir.resolve()
    rows = [[*row, "this run" if Path(row[1]).resolve() == here else ""]
            for row in ranking_rows(udr)]  # fmt: skip
    d = udr["dataset"]
    note = (f"UDR ({udr['correlation']}, Duan et al. 2020, disentanglement_lib's definition) "
            f"on {d['images']} images of {d['name']}: how well the other runs' units match "
            "this run's, one unit to one unit. It ranks runs of one setting against each "
            "other (seeds, unit counts, DyGA on or off); it is not a score of one run alone. "
            f"Active units: {udr['activity_rule']}")  # fmt: skip
    return (_table(["rank", "run", "UDR", "active units", ""], rows)
            + f"<p class='note'>{html.escape(note)}</p>")  # fmt: skip


REGEN_ACCURACY_NOTE = (
    "The classifier reads the factors of generated images; factors whose classifier "
    "accuracy on regenerations (unswapped regenerations against the sources' true factors) "
    "is low give unreliable changed-shares: their predictions flip between two generations "
    "by chance, swap or no swap."
)


def _interchange_section(res: dict) -> str:
    names = res["factor_names"]
    rows = [[f"unit {k}", *shares, res["per_unit_exactly_one"][k]]
            for k, shares in enumerate(res["per_unit_changed_share"])]  # fmt: skip
    acc = res.get("classifier_held_out_accuracy") or {}
    regen = res.get("classifier_accuracy_on_regenerations")
    summary = (f"Share of swaps changing exactly one factor: {res['exactly_one']:.3f} "
               f"(none: {res['none']:.3f}, several: {res['several']:.3f}); "
               f"{res['settings']['n_pairs']} pairs, {res['settings']['ddim_steps']} DDIM steps. "
               "Factor classifier held-out accuracy (real images): "
               + ", ".join(f"{k} {v:.3f}" for k, v in acc.items()))  # fmt: skip
    if regen:
        summary += ("; on regenerations: " + ", ".join(f"{k} {v:.3f}" for k, v in regen.items())
                    + f" (mean {res['classifier_accuracy_on_regenerations_mean']:.3f}). "
                    + REGEN_ACCURACY_NOTE)  # fmt: skip
        rows.append(["classifier accuracy on regenerations", *[regen[n] for n in names], ""])
    else:
        summary += (". Classifier accuracy on regenerations not measured (an interchange.json "
                    "from an older factordiff: rerun factordiff interchange).")  # fmt: skip
    return (f"<p>{html.escape(summary)}</p>"
            + _table(["unit", *[f"changed {n}" for n in names], "exactly one"], rows))  # fmt: skip


def _downstream_section(res: dict) -> str:
    rows = []
    for name, r in res.items():
        acc = {int(k): v for k, v in r["accuracy"].items()}
        eff = r["sample_efficiency"]
        rows.append([name, *[acc[n] for n in sorted(acc, reverse=True)], *eff.values()])
    first = next(iter(res.values()))
    sizes = sorted((int(k) for k in first["accuracy"]), reverse=True)
    header = ["representation", *[f"acc@{n}" for n in sizes], *first["sample_efficiency"]]
    return _table(header, rows)


def write_report(
    model,
    dataset,
    run_dir: Path,
    out: Path,
    *,
    results: dict | None = None,
    downstream: dict | None = None,
    interchange: dict | None = None,
    steps: int | None = None,
    metrics_log: Path | None = None,
    companion_run: Path | None = None,
    udr: dict | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Render every section into ``out`` (HTML). ``results``: metrics as
    ``fd.metrics.evaluate`` returns them (or from eval.json); missing parts are skipped
    with a note saying how to produce them. ``metrics_log``: the training log to plot
    (default ``run_dir/metrics.jsonl``, else a saved model's ``train_log.jsonl``).
    ``companion_run``: another run shown in its own section (the demo's short run).
    ``udr``: ``factordiff udr``'s result over runs that include this one."""
    cfg = model.config
    sections: list[tuple[str, str]] = [("Model", _provenance_section(model, run_dir, results))]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)

        def figure(title: str, make: Callable[[Path], Path], note: str = "") -> None:
            log(f"report: {title}")
            path = make(tmp / f"{len(sections)}.png")
            text = f"<p class='note'>{html.escape(note)}</p>" if note else ""
            sections.append((title, _img(path, title) + text))

        overview = _overview(model)
        config_text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
        sections.append(("Config", _table(["setting", "value"], overview)
                         + "<details><summary>full config.yaml</summary>"
                         f"<pre>{html.escape(config_text)}</pre></details>"))  # fmt: skip
        metrics_log = metrics_log or next(
            (p for p in (run_dir / "metrics.jsonl", run_dir / "train_log.jsonl") if p.is_file()),
            run_dir / "metrics.jsonl",
        )
        if metrics_log.is_file():
            figure("Training curves", lambda p: plots.save_training_curves(metrics_log, p))
            if plots.has_anchoring_records(metrics_log):
                figure("What anchoring did", lambda p: plots.save_anchoring_plot(metrics_log, p),
                       "DyGA per unit: lam, the move toward the anchor as a share of the "
                       "distance to it, the share of exactly-zero token entries, and the "
                       "anchors kept at each refit. Flat zeros: the pull did nothing.")  # fmt: skip
        if results is not None:
            sections.append(("Metrics", _metrics_section(results)))
            if "dci" in results:
                figure("DCI importance", lambda p: plots.save_importance_heatmap(
                    np.asarray(results["dci"]["importance_matrix"]),
                    list(dataset.factor_names), p))  # fmt: skip
        elif not dataset.has_ground_truth:
            sections.append(("Metrics", f"<p>{html.escape(NO_LABELS_NOTE)}</p>"))
        else:
            sections.append(("Metrics", "<p>Not evaluated: run <code>factordiff eval RUN</code> "
                             "first (or pass --scale to the report).</p>"))  # fmt: skip
        if udr is not None:
            sections.append(("Model selection without labels (UDR)", _udr_section(udr, run_dir)))
        figure("Reconstructions", lambda p: grids.save_reconstruction_grid(
            model, dataset, p, steps=steps),
            "Top: originals; middle (with a learned first stage): its own reconstruction, "
            "what the diffusion model learns to regenerate, so a factor blurred there gives "
            "the units little reason to keep it apart; bottom: DDIM from the units.",
        )  # fmt: skip
        figure(
            "Samples",
            lambda p: grids.save_sample_grid(model, dataset, p, steps=steps),
            "Each unit of each sample comes from a different random image.",
        )
        figure("Latent interchange", lambda p: grids.save_swap_grid(model, dataset, p, steps=steps),
               "Column 'unit k': the source regenerated with unit k taken from the target. "
               "'source regen.': the source regenerated from its own units with the same "
               "noise; what already differs there from the source (hue, shape) is "
               "reconstruction drift, not the swap.")  # fmt: skip
        if interchange is not None:
            sections.append(("Interchange score", _interchange_section(interchange)))
        figure("Traversals", lambda p: grids.save_traverse_grid(model, dataset, p, steps=steps),
               "Each unit's scalar walked over its 2-98 % quantiles on 1000 images (range "
               "and the image's own value in the row label), the other scalars fixed. "
               "'regen.': the image from its own units with the same noise, so drift "
               "there is reconstruction error. A unit can look inert for one image and "
               "act on another: where several units carry one factor (see the DCI heat "
               "map) and their scalars are correlated, one walked alone leaves the "
               "combinations seen in training and the decoder may follow the others; "
               "that is the model, not the plot.")  # fmt: skip
        if model.anchors is not None:
            figure("Traversals over anchors", lambda p: grids.save_traverse_grid(
                model, dataset, p, over="anchors", steps=steps))  # fmt: skip
        figure(
            "Unit histograms",
            lambda p: _unit_histograms(model, dataset, p),
            "Red lines: DyGA anchors projected like the codes." if model.anchors else "",
        )
        if model.anchors is not None and results is not None and "dci" in results:
            sections.append(("Anchors per unit", _anchors_per_unit(model, results, dataset)))
        anchor_plots = sorted((run_dir / "samples").glob("anchors_*.png"))
        if anchor_plots:  # written by the run at its newest DyGA refit
            note = "Each unit's features on two principal axes; crosses: the Gaussians' means."
            body = _img(anchor_plots[-1], "anchors") + f"<p class='note'>{note}</p>"
            sections.append(("Anchors at the last refit", body))
        image = grids.as_rgb(dataset.images_at(np.array([0])))[0]
        if hasattr(model, "unet"):  # the diffusion model; the VAE baselines have none
            figure(
                "Cross-attention maps",
                lambda p: save_attention_figure(model, image, p),
                "Attention of each pixel to each unit's token at three noise levels.",
            )
        if downstream is not None:
            figure("Downstream accuracy", lambda p: plots.save_downstream_plot(downstream, p))
            sections.append(("Downstream table", _downstream_section(downstream)))
        if companion_run is not None and (companion_run / "metrics.jsonl").is_file():
            own_log = companion_run / "metrics.jsonl"
            figure(f"Your own run: {companion_run}",
                   lambda p: plots.save_training_curves(own_log, p),
                   "The short from-scratch run this command just trained (not the model "
                   "above): the loss falling shows the loop works; disentanglement takes "
                   "longer.")  # fmt: skip
        sections.append(
            ("How to reproduce", f"<pre>{html.escape(_reproduce(model, run_dir))}</pre>")
        )
    body = "".join(f"<h2>{html.escape(t)}</h2>\n{c}\n" for t, c in sections)
    title = f"factordiff report: {_model_label(model, run_dir)} ({cfg.data.name})"
    page = (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
            f"<body><h1>{html.escape(title)}</h1>\n{body}</body></html>\n")  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".html.tmp")
    tmp_out.write_text(page)
    tmp_out.replace(out)
    return out


def _model_label(model, run_dir: Path) -> str:
    shipped = model.provenance.get("shipped")
    return f"shipped model '{shipped}'" if shipped else str(run_dir)


def _anchors_per_unit(model, results: dict, dataset) -> str:
    """Per unit, the Gaussians DyGA kept beside the values of the factor the unit carries
    most (largest DCI importance): the paper's claim is that K follows the attribute."""
    importance = np.asarray(results["dci"]["importance_matrix"])  # (codes, factors)
    names, sizes = list(dataset.factor_names), list(dataset.factor_sizes)
    rows = []
    for u, mix in enumerate(model.anchors.units):
        if u >= len(importance) or not importance[u].any():
            rows.append([u, mix.n_components, "none (no importance)", "-"])
            continue
        f = int(np.argmax(importance[u]))
        share = importance[u, f] / importance[u].sum()
        rows.append([u, mix.n_components, f"{names[f]} ({share:.0%} of the unit's importance)",
                     sizes[f]])  # fmt: skip
    note = (
        "<p class='note'>K: Gaussians at the last refit (anchoring.split_rule="
        f"{html.escape(model.config.anchoring.split_rule)}); a unit that carries one "
        "factor would ideally have one anchor per value of it.</p>"
    )
    return _table(["unit", "K (anchors)", "factor it carries most", "values of that factor"],
                  rows) + note  # fmt: skip


def _provenance_section(model, run_dir: Path, results: dict | None) -> str:
    """Which weights this page shows and when its numbers were made: a reader must be able
    to tell a shipped model from their own run, and a fresh score from an old one."""
    prov, cfg = model.provenance, model.config
    step = prov.get("step")
    trained = f"{step} of {cfg.train.max_steps} steps" if step is not None else "not recorded"
    rows = [
        ["model", _model_label(model, run_dir)],
        ["folder", prov.get("path", str(run_dir))],
        ["weights", prov.get("checkpoint", "model.safetensors")],
        ["trained", f"{trained}, batch {cfg.train.batch_size}, seed {cfg.train.seed}"],
        ["config sha256", prov.get("config_sha256", "-")],
    ]
    if "saved_with" in prov:
        rows.append(["saved", f"{prov.get('saved_at')} with factordiff {prov['saved_with']}"])
    if results is not None:
        p = results.get("protocol", {})
        when = p.get("scored_at", "not recorded")
        version = p.get("factordiff_version", "not recorded")
        rows.append(["metrics scored", f"{when}, factordiff {version}, "
                     f"protocol x {p.get('scale')}"])  # fmt: skip
        rows.append(["scored code", p.get("represents", getattr(model, "representation_of", "-"))])
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rows.append(["report written", f"{now}, factordiff {__version__}"])
    return _table([], rows)


def _reproduce(model, run_dir: Path) -> str:
    """Commands that remake this page; a shipped model is retrained into runs/, never
    into the package."""
    shipped = model.provenance.get("shipped")
    if shipped:
        out = f"runs/{shipped}-retrained"
        return (f"factordiff train {run_dir}/config.yaml --out {out}\nfactordiff eval {out}\n"
                f"factordiff downstream {out}\nfactordiff report {out}")  # fmt: skip
    return (f"factordiff train {run_dir}/config.yaml --out {run_dir}   # resumes if unfinished\n"
            f"factordiff eval {run_dir}\nfactordiff downstream {run_dir}\n"
            f"factordiff report {run_dir}")  # fmt: skip


def _overview(model) -> list[list]:
    """The settings a reader compares first, as (name, value) rows."""
    cfg, m = model.config, model.config.model
    training = f"{cfg.train.max_steps} steps x batch {cfg.train.batch_size}"
    if m.family != "diffusion":
        weight = (f"gamma {format_setting(m.vae.gamma)}" if m.family == "factorvae"
                  else f"beta {format_setting(m.vae.beta)}")  # fmt: skip
        about = f"{m.family} baseline, {m.vae.latent_dim} latents, {weight}"
        return [["dataset", cfg.data.name], ["model", about], ["training", training]]
    return [
        ["dataset", cfg.data.name],
        ["first stage", f"{m.first_stage.kind}, latent {model.latent_shape}"],
        ["latent units", f"{m.encoder.n_units} x {m.encoder.unit_dim} ({m.encoder.kind})"],
        ["U-Net", f"{m.unet.model_channels} ch x {m.unet.channel_mult}"],
        ["DyGA anchors", "yes" if model.anchors is not None else "no"],
        ["Skip Dropout", format_setting(m.unet.skip_dropout, zero="off")],
        ["diffusion", f"{cfg.diffusion.prediction}, {cfg.diffusion.loss} loss"],
        ["training", training],
    ]


def format_setting(value, zero: str = "0") -> str:
    """A config value for a reader: ``zero`` for 0 (e.g. "off"), floats to 4 significant
    digits (0.6666666666666666 -> 0.6667, 4.5e-06 stays), booleans as yes / no."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float) and value == 0:
        return zero
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _unit_histograms(model, dataset, out: Path) -> Path:
    rs = np.random.RandomState(0)
    images = dataset.images_at(np.sort(rs.choice(len(dataset), min(2000, len(dataset)), False)))
    codes = np.asarray(model.represent(images))
    anchors = None
    if codes.ndim == 3:  # vector units: the per-unit PCA the metrics use
        pca = UnitPCA.fit(codes)
        codes = pca.transform(codes)
        if model.anchors is not None:
            anchors = [(u.means.cpu().double().numpy() - pca.mean[k]) @ pca.components[k]
                       for k, u in enumerate(model.anchors.units)]  # fmt: skip
    return plots.save_unit_histograms(codes, out, anchors)


def load_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None

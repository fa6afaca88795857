"""Seeing and using the units: swap / traverse figures, attention maps, the interchange
score, the downstream task and the HTML report, on a tiny trained DyGA run."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import factordiff as fd
from factordiff.cli import app
from factordiff.data import load
from factordiff.interchange import FactorClassifier, interchange_score
from factordiff.metrics.downstream import downsampled_pixels, downstream
from factordiff.models.unet import UNet
from factordiff.pipeline import FactorDiffusion
from factordiff.training import train
from factordiff.viz import (
    save_reconstruction_grid,
    save_swap_grid,
    save_traverse_grid,
    swap_grid,
    traverse_units,
)
from factordiff.viz.attention_maps import cross_attention_maps, recording_cross_attention
from factordiff.viz.report import _interchange_section, format_setting, write_report
from metric_cases import MetricTinyGrid, decode_factors
from run_helpers import tiny

RUNNER = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """4 steps of the tiny config with DyGA anchors refitted at step 2."""
    path = tmp_path_factory.mktemp("inspect") / "run"
    cfg = tiny("train.max_steps=4", "train.checkpoint_every=4", "anchoring.enabled=true",
               "anchoring.every_steps=2", "anchoring.max_points=2000")  # fmt: skip
    train(cfg, path, progress=False)
    return path


@pytest.fixture(scope="module")
def model(run: Path) -> FactorDiffusion:
    return FactorDiffusion.from_pretrained(run)


def _png(path: Path) -> Image.Image:
    img = Image.open(path)
    img.load()
    return img


def test_swap_and_traverse_commands_write_pngs(run: Path, tmp_path: Path) -> None:
    res = RUNNER.invoke(app, ["swap", str(run), "--out", str(tmp_path / "s.png"),
                              "--pairs", "2", "--steps", "2"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert _png(tmp_path / "s.png").size[0] > 400
    for over in ("data", "anchors"):
        out = tmp_path / f"t_{over}.png"
        res = RUNNER.invoke(app, ["traverse", str(run), "--out", str(out), "--over", over,
                                  "--n-steps", "3", "--steps", "2"])  # fmt: skip
        assert res.exit_code == 0, res.output
        assert _png(out).size[1] > 200


def test_swap_grid_shows_the_unswapped_regeneration_beside_the_source(
    model: FactorDiffusion, tmp_path: Path
) -> None:
    images = load("quickstart").images_at(np.arange(4))
    grid = swap_grid(model, images[:2], images[2:], steps=2)
    n = model.n_units
    assert grid.shape == (2, 3 + n, 32, 32, 3)  # source, source regen., target, N swaps
    assert np.array_equal(grid[:, 0], images[:2]) and np.array_equal(grid[:, 2], images[2:])
    regen = model.decode(model.encode(images[:2]), 2, seed=0)  # same noise as the swaps
    assert np.abs(grid[:, 1].astype(int) - regen.astype(int)).max() <= 1
    out = save_swap_grid(model, load("quickstart"), tmp_path / "s.png", n_pairs=2, steps=2)
    assert _png(out).size[0] == round((0.9 * (3 + n) + 1.6) * 100)  # one cell per column


def test_traverse_grid_leads_each_row_with_image_and_regeneration(
    model: FactorDiffusion, tmp_path: Path
) -> None:
    out = save_traverse_grid(model, load("quickstart"), tmp_path / "t.png", n_steps=3, steps=2)
    assert _png(out).size[0] == round((0.9 * (2 + 3) + 1.6) * 100)  # image, regen., 3 steps


def test_reconstruction_grid_shows_what_the_first_stage_keeps(
    model: FactorDiffusion, tmp_path: Path
) -> None:
    data = load("quickstart")
    shipped = fd.load_pretrained("quickstart")  # a learned (KL) first stage
    images = data.images_at(np.arange(0, 2592, 97))
    kept = shipped.autoencode(images)
    assert kept.shape == images.shape and kept.dtype == np.uint8
    error = np.abs(kept.astype(int) - images.astype(int)).mean()
    assert error < 0.6 * np.abs(images[::-1].astype(int) - images.astype(int)).mean()
    three = save_reconstruction_grid(shipped, data, tmp_path / "r3.png", n_images=3, steps=2)
    two = save_reconstruction_grid(model, data, tmp_path / "r2.png", n_images=3, steps=2)
    # original / first stage / generated; a pixel-space first stage has no row of its own
    assert _png(three).size[1] - _png(two).size[1] == 90


def test_traverse_rejects_bad_options(run: Path, tmp_path: Path) -> None:
    res = RUNNER.invoke(app, ["traverse", str(run), "--over", "sideways"])
    assert res.exit_code != 0 and "--over must be data or anchors" in str(res.exception)
    res = RUNNER.invoke(app, ["swap", str(run), "--out", str(tmp_path / "x.jpg")])
    assert "--out must be a .png" in str(res.exception)


def test_traversal_changes_only_the_walked_unit(model: FactorDiffusion) -> None:
    images = load("quickstart").images_at(np.arange(64))
    walks, labels = traverse_units(model, images[0], images, n_steps=5)
    assert len(walks) == model.config.model.encoder.n_units and len(labels[0]) == 5
    base = model.encode(images[:1])[0]
    for k, walk in enumerate(walks):
        assert walk.shape == (5, *base.shape)
        others = [j for j in range(len(walks)) if j != k]
        # anchors pull every token, so compare the other units between steps of the walk
        assert np.allclose(walk[:, others].numpy(), walk[:1, others].numpy(), atol=1e-6)


def test_cross_attention_maps_are_probabilities_and_processors_come_back(
    model: FactorDiffusion,
) -> None:
    processors = [m.processor for m in model.unet.modules() if hasattr(m, "processor")]
    image = load("quickstart").images_at(np.array([3]))[0]
    maps = cross_attention_maps(model, image, timesteps=(800, 100))
    n_units = model.config.model.encoder.n_units
    assert maps.shape == (2, n_units, 32, 32)
    assert maps.min() >= 0 and np.isclose(maps.max(axis=(1, 2, 3)), 1.0).all()
    assert [m.processor for m in model.unet.modules() if hasattr(m, "processor")] == processors
    with recording_cross_attention(model.unet) as store:
        model.unet.forward  # noqa: B018 -- nothing runs, nothing is recorded
    assert store == [] and isinstance(model.unet, UNet)


def test_interchange_score_counts_changed_factors(model: FactorDiffusion) -> None:
    dataset = load("quickstart")
    clf = FactorClassifier(dataset.factor_sizes, model.image_size)  # untrained: any answer
    res = interchange_score(model, dataset, n_pairs=2, steps=2, classifier=clf, progress=False)
    n_units, n_factors = model.config.model.encoder.n_units, len(dataset.factor_sizes)
    assert np.array(res["per_unit_changed_share"]).shape == (n_units, n_factors)
    assert res["exactly_one"] + res["none"] + res["several"] == pytest.approx(1.0)
    regen = res["classifier_accuracy_on_regenerations"]
    assert list(regen) == list(dataset.factor_names)
    assert all(0.0 <= v <= 1.0 for v in regen.values())
    assert res["classifier_accuracy_on_regenerations_mean"] == pytest.approx(
        np.mean(list(regen.values()))
    )
    html_text = _interchange_section(res)
    assert "classifier accuracy on regenerations" in html_text and "unreliable" in html_text
    old = {k: v for k, v in res.items() if not k.startswith("classifier_accuracy_on_regen")}
    assert "not measured" in _interchange_section(old)  # an interchange.json from before


def test_interchange_command_prints_classifier_accuracy_on_regenerations(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import factordiff.interchange as ic

    dataset = load("quickstart")
    untrained = FactorClassifier(dataset.factor_sizes, 32)  # no 1500-step training in a test
    monkeypatch.setattr(ic, "load_or_train_classifier", lambda *a, **k: (untrained, None))
    res = RUNNER.invoke(app, ["interchange", str(run), "--pairs", "2", "--steps", "2",
                              "--out", str(tmp_path / "ic.json")])  # fmt: skip
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "classifier" in text and "give unreliable changed-shares" in text
    saved = json.loads((tmp_path / "ic.json").read_text())
    assert 0.0 <= saved["classifier_accuracy_on_regenerations_mean"] <= 1.0


def test_config_values_are_formatted_for_readers() -> None:
    assert format_setting(0.0, zero="off") == "off" and format_setting(0) == "0"
    assert format_setting(2 / 3) == "0.6667" and format_setting(4.5e-06) == "4.5e-06"
    assert format_setting(0.1) == "0.1" and format_setting(1.0) == "1"
    assert format_setting(64) == "64" and format_setting(True) == "yes"


def test_periodic_eval_legend_does_not_cover_the_curves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from factordiff.viz import plots

    log = tmp_path / "metrics.jsonl"
    scores = {"dci/disentanglement": 0.3, "mig/mig": 0.2, "sap/sap": 0.9}
    lines = [{"step": s, "loss": 1.0 / s, "eval": {k: v + s / 1e4 for k, v in scores.items()}}
             for s in (100, 200, 300)]  # fmt: skip
    log.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, out, dpi: figures.append(fig) or out)
    plots.save_training_curves(log, tmp_path / "c.png")
    fig = figures[0]
    fig.tight_layout()
    renderer = fig.canvas.get_renderer()
    ax = next(a for a in fig.axes if a.get_legend() is not None)
    legend = ax.get_legend().get_window_extent(renderer)
    assert not legend.overlaps(ax.get_window_extent(renderer))
    assert legend.x1 <= fig.bbox.x1  # and it is not cut off


def test_downstream_known_answers() -> None:
    data = MetricTinyGrid()
    perfect = downstream(lambda x: decode_factors(x).astype(float), data, train_sizes=(300, 100),
                         num_test=500)  # fmt: skip
    assert perfect["accuracy"] == {300: 1.0, 100: 1.0}
    assert perfect["sample_efficiency"] == {"100/300": 1.0}
    constant = downstream(lambda x: np.zeros((len(x), 2)), data, train_sizes=(300, 100),
                          num_test=500)  # fmt: skip
    chance = np.mean([1 / s for s in data.factor_sizes])
    assert constant["accuracy"][300] < chance + 0.1
    with pytest.raises(fd.metrics.MetricInputError, match="train_sizes"):
        downstream(lambda x: x, data, train_sizes=(1,))


def test_downstream_command_writes_json_and_plot(run: Path) -> None:
    res = RUNNER.invoke(app, ["downstream", str(run), "--sizes", "200,50", "--num-test", "200"])
    assert res.exit_code == 0, res.output
    out = json.loads((run / "downstream.json").read_text())
    assert set(out) == {"model (scalars)", "pixels 8x8"}
    assert set(out["pixels 8x8"]["accuracy"]) == {"200", "50"}
    assert _png(run / "downstream.png").size[0] > 200
    pixels = downsampled_pixels(8)(np.zeros((2, 32, 32, 3), np.uint8))
    assert pixels.shape == (2, 8 * 8 * 3)


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.headings: list[str] = []
        self._in_h2 = False
        self.stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag not in ("meta", "br"):
            self.stack.append(tag)
        self._in_h2 = tag == "h2"

    def handle_endtag(self, tag):
        assert self.stack and self.stack.pop() == tag, f"unbalanced </{tag}>"
        self._in_h2 = False

    def handle_data(self, data):
        if self._in_h2:
            self.headings.append(data)


@pytest.fixture(scope="module")
def report(run: Path, model: FactorDiffusion) -> Path:
    results = fd.metrics.evaluate(model.represent, load("quickstart"), ["dci", "mig"],
                                  scale=0.05, progress=False)  # fmt: skip
    return write_report(model, load("quickstart"), run, run / "report.html", results=results,
                        steps=2, log=lambda m: None)  # fmt: skip


def test_report_is_self_contained_valid_html_with_every_section(report: Path) -> None:
    text = report.read_text()
    page = _Page()
    page.feed(text)
    assert page.stack == []
    for section in ["Config", "Training curves", "Metrics", "DCI importance", "Reconstructions",
                    "Samples", "Latent interchange", "Traversals", "Traversals over anchors",
                    "Unit histograms", "Anchors per unit", "Anchors at the last refit",
                    "Cross-attention maps", "How to reproduce"]:  # fmt: skip
        assert section in page.headings
    # per unit: K beside the values of the factor it carries most (quickstart: 3 shapes ...)
    assert re.search(r"<tr><td>0</td><td>\d+</td><td>(shape|scale|hue|pos_x|pos_y) \(\d+% of", text)
    assert "What anchoring did" in page.headings  # the tiny run has DyGA refits
    assert len(page.images) == 11  # 10 figures + the run's newest anchor plot
    assert re.search(r"<td>Skip Dropout</td><td>off</td>", text)  # not 0.0000
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        _png(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
    assert not re.search(r"(src|href)=['\"]https?:", text)  # nothing fetched from a network


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")
def test_report_renders_in_a_browser_with_all_images_loaded(report: Path, tmp_path: Path) -> None:
    probe = tmp_path / "probe.html"
    check = (
        "<script>document.title = [...document.images].every("
        "i => i.complete && i.naturalWidth > 0) ? 'ALL_LOADED' : 'BROKEN';</script>"
    )
    probe.write_text(report.read_text().replace("</body>", check + "</body>"))
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
         "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    assert "<title>ALL_LOADED</title>" in dom

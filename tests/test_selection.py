"""`factordiff udr`: ranking trained runs without labels, on an unlabelled image folder."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from factordiff.cli import app
from factordiff.config import load_config
from factordiff.errors import FactordiffError
from factordiff.selection import _check_same_data, udr_of_runs
from factordiff.training import train
from run_helpers import TINY

runner = CliRunner()


@pytest.fixture(scope="module")
def folder_runs(tmp_path_factory) -> tuple[Path, list[Path]]:
    """An image folder without factors.csv, and two short runs on it (seeds 0 and 1)."""
    tmp = tmp_path_factory.mktemp("udr")
    root = tmp / "images"
    root.mkdir()
    for i, (hue, row, col) in enumerate(np.ndindex(3, 4, 4)):
        img = np.zeros((32, 32, 3), np.uint8)
        img[2 + 7 * row : 9 + 7 * row, 2 + 7 * col : 9 + 7 * col, hue] = 220
        Image.fromarray(img).save(root / f"{i:02d}.png")
    runs = []
    for seed in (0, 1):
        run = tmp / f"run{seed}"
        cfg = load_config("quickstart", [*TINY, "data.name=imagefolder", f"data.root={root}",
                                         "data.image_size=32", "train.max_steps=2",
                                         f"train.seed={seed}"])  # fmt: skip
        train(cfg, run, progress=False)
        runs.append(run)
    return root, runs


def test_udr_command_ranks_runs_on_a_folder_without_labels(folder_runs, tmp_path) -> None:
    _, runs = folder_runs
    out = tmp_path / "udr.json"
    res = runner.invoke(app, ["udr", *map(str, runs), str(runs[0]), "--images", "40",
                              "--out", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "UDR (lasso) on 40 images of imagefolder" in res.output
    found = json.loads(out.read_text())
    assert len(found["scores"]) == 3 and all(0 <= s <= 1 for s in found["scores"])
    assert sorted(found["ranking"]) == sorted(found["runs"])
    assert found["dataset"] == {"name": "imagefolder", "root": str(folder_runs[0]),
                                "images": 40, "of": 48, "seed": 0}  # fmt: skip
    # run 0 given twice: its two copies agree perfectly with each other, so they rank
    # above run 1 (each copy's median includes the other copy)
    assert found["pairwise"][0][2] == pytest.approx(found["pairwise"][2][0])
    assert found["ranking"][-1] == str(runs[1])


def test_report_of_an_unlabelled_run_shows_udr_beside_its_sibling(folder_runs) -> None:
    _, runs = folder_runs
    res = runner.invoke(app, ["report", str(runs[0]), "--steps", "2", "--udr-with",
                              str(runs[1]), "--udr-images", "30"])  # fmt: skip
    assert res.exit_code == 0, res.output
    page = (runs[0] / "report.html").read_text()
    assert "has no factor labels" in page and "Model selection without labels (UDR)" in page
    assert "this run" in page and str(runs[1]) in page
    for figure in ("Reconstructions", "Latent interchange", "Traversals", "Cross-attention"):
        assert f"<h2>{figure}" in page
    written = json.loads((runs[0] / "udr.json").read_text())
    assert written["dataset"]["images"] == 30 and len(written["runs"]) == 2
    # a second report finds that udr.json by itself (it lists this run)
    again = runner.invoke(app, ["report", str(runs[0]), "--steps", "2"])
    assert again.exit_code == 0, again.output
    assert "Model selection without labels" in (runs[0] / "report.html").read_text()


def test_more_images_than_the_folder_uses_them_all(folder_runs) -> None:
    _, runs = folder_runs
    res = udr_of_runs(runs, n_images=500, correlation="spearman", progress=False)
    assert res["dataset"]["images"] == 48 and res["correlation"] == "spearman"


def test_runs_on_different_data_are_refused() -> None:
    def model(name, size):
        return SimpleNamespace(config=SimpleNamespace(data=SimpleNamespace(
            name=name, root=None, image_size=size)))  # fmt: skip

    with pytest.raises(FactordiffError, match="b was trained on data .* same images"):
        _check_same_data(["a", "b"], [model("quickstart", 32), model("quickstart", 64)])
    res = runner.invoke(app, ["udr", "quickstart"])
    assert res.exit_code == 1 and "at least 2" in str(res.exception)


def test_vae_runs_are_filtered_by_their_kl_as_in_disentanglement_lib(tmp_path) -> None:
    runs = []
    for seed in (0, 1):
        runs.append(tmp_path / f"vae{seed}")
        short = ["train.max_steps=3", "train.batch_size=16", "train.eval_every=0"]
        cfg = load_config("betavae_quickstart", [*short, f"train.seed={seed}"])
        train(cfg, runs[-1], progress=False)
    res = udr_of_runs(runs, n_images=200, progress=False)
    assert res["activity_rule"] == "mean KL to the prior > 0.01"
    assert len(res["active"][0]) == 10 and res["represents"][0] == "the encoder's posterior means"

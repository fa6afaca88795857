"""FactorVAE and beta-VAE from a codes file: the factor grid, labelled samples, coverage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import factordiff as fd
from factordiff.errors import FactordiffError
from factordiff.metrics.beta_vae import beta_vae
from factordiff.metrics.codes_file import load_codes, score_codes
from factordiff.metrics.evaluate import PROTOCOL
from factordiff.metrics.factor_vae import factor_vae
from metric_cases import MetricTinyGrid, represent_mixed

SAMPLING = ["factorvae", "betavae"]


def _grid_codes(seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Codes of every MetricTinyGrid image, rows shuffled."""
    ds = MetricTinyGrid()
    idx = np.random.RandomState(seed).permutation(len(ds))
    return represent_mixed(ds.images_at(idx)), ds.index_to_factors(idx)


def _save(path: Path, codes: np.ndarray, factors: np.ndarray, **extra) -> Path:
    np.savez(path, codes=codes, factors=factors, **extra)
    return path


def test_a_full_grid_file_scores_exactly_as_the_images(tmp_path: Path) -> None:
    ds = MetricTinyGrid()
    path = _save(tmp_path / "grid.npz", *_grid_codes())
    out = score_codes(load_codes(path), SAMPLING)
    fv = factor_vae(represent_mixed, ds, 0, **PROTOCOL["factorvae"])
    bv = beta_vae(represent_mixed, ds, 0, **PROTOCOL["betavae"])
    assert out["factorvae"]["train_votes"] == fv["train_votes"]
    assert out["factorvae"]["eval_accuracy"] == fv["eval_accuracy"]
    assert out["betavae"]["eval_accuracy"] == bv["eval_accuracy"]
    assert out["factorvae"]["sampling"].startswith("full factor grid: 360 rows")


def test_labelled_samples_agree_within_sampling_noise(tmp_path: Path) -> None:
    codes, factors = _grid_codes()
    grid = score_codes(load_codes(_save(tmp_path / "g.npz", codes, factors)), SAMPLING)
    rs = np.random.RandomState(0)
    rows = rs.permutation(np.concatenate([np.arange(len(codes))] * 3))
    data = load_codes(_save(tmp_path / "l.npz", codes[rows], factors[rows]))
    out = score_codes(data, SAMPLING)
    assert out["factorvae"]["sampling"].startswith("labelled samples: 1080 rows, 360 of the 360")
    for name in SAMPLING:
        assert out[name]["eval_accuracy"] == pytest.approx(grid[name]["eval_accuracy"], abs=0.03)


def test_too_few_rows_for_a_factor_value_is_one_clear_error(tmp_path: Path) -> None:
    codes, factors = _grid_codes()
    keep = ~((factors[:, 3] == 2) & (np.arange(len(factors)) % 3 > 0))  # thin out d == 2
    rows = np.concatenate([np.flatnonzero(keep)] * 2)
    names = np.array(["a", "b", "c", "d"])
    path = _save(tmp_path / "thin.npz", codes[rows], factors[rows], factor_names=names)
    with pytest.raises(FactordiffError) as err:
        score_codes(load_codes(path), ["factorvae"])
    message = str(err.value)
    n_value, n_distinct = 2 * int(np.sum(keep & (factors[:, 3] == 2))), int(keep.sum())
    assert n_value < 64
    assert f"thin.npz: 'd' (column 3) value 2 has {n_value} rows" in message
    assert ">= 64 rows for every factor value" in message
    assert f"{n_distinct} distinct factor combinations of the 360" in message


def test_cli_runs_factorvae_on_a_codes_file(tmp_path: Path) -> None:
    path = _save(tmp_path / "grid.npz", *_grid_codes())
    out = tmp_path / "scores.json"
    proc = subprocess.run(
        [sys.executable, "-m", "factordiff", "metrics", str(path), "--metrics",
         "factorvae,mig", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "eval_accuracy" in proc.stdout
    assert "factorvae batches: full factor grid: 360 rows" in proc.stdout
    assert json.loads(out.read_text())["factorvae"]["sampling"].startswith("full factor grid")


def test_shipped_model_codes_file_reproduces_its_eval_json(tmp_path: Path) -> None:
    """Codes of every quickstart image from the shipped model, saved and scored as a file:
    the FactorVAE votes of the image path (the shipped eval.json) exactly."""
    from factordiff.shipped import resolve_model

    model = fd.FactorDiffusion.from_pretrained("quickstart")
    ds = fd.data.load("quickstart")
    idx = np.random.RandomState(0).permutation(len(ds))
    path = _save(tmp_path / "qs.npz", model.represent(ds.images_at(idx)), ds.index_to_factors(idx))
    out = score_codes(load_codes(path), ["factorvae"])
    shipped = json.loads((resolve_model(Path("quickstart")) / "eval.json").read_text())
    assert out["factorvae"]["train_votes"] == shipped["factorvae"]["train_votes"]
    assert out["factorvae"]["eval_accuracy"] == shipped["factorvae"]["eval_accuracy"]

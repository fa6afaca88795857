"""benchmarks/carryover_diagnosis.py: salience and the probes measure what they claim."""

from __future__ import annotations

import numpy as np
import pytest

from factordiff.data import load

BENCHMARK = "carryover_diagnosis"  # the ``bench`` fixture (conftest.py) imports it


def test_salience_is_the_share_of_pixel_change_each_factor_makes(bench) -> None:
    ds = load("quickstart")
    factors = ds.sample_factors(400, np.random.RandomState(0))
    found = bench.salience(ds, ds.images(factors), factors, seed=0)
    sal = dict(zip(ds.factor_names, found, strict=True))
    # moving a flat shape across the frame changes more pixels than swapping its outline
    assert sal["pos_x"] > sal["scale"] > sal["shape"] > 0
    # here every factor moves less of the picture than going to a random image does
    assert all(0 < v < 1 for v in sal.values())


def test_cnn_probe_reads_a_visible_factor_and_not_a_random_label(bench, monkeypatch) -> None:
    rng = np.random.RandomState(0)
    labels = rng.randint(0, 2, 240)
    images = rng.uniform(-1, 1, (240, 3, 16, 16)).astype(np.float32) * 0.3
    images[labels == 1, :, 4:12, 4:12] += 0.7  # a bright square: visible anywhere a CNN looks
    order = rng.permutation(240)
    train, test = order[:180], order[180:]
    monkeypatch.setattr(bench, "PROBE_EPOCHS", 8)
    assert bench.cnn_probe(images, labels, train, test, seed=0) > 0.95
    assert bench.cnn_probe(images, rng.randint(0, 2, 240), train, test, seed=0) < 0.75


def test_vote_accuracy_reads_the_grid_cell_or_eval_json(bench, tmp_path) -> None:
    (tmp_path / "cell.json").write_text('{"row": {"factorvae_per_factor": [0.5, 1.0]}}')
    assert bench.vote_accuracy(tmp_path) == pytest.approx([0.5, 1.0])
    (tmp_path / "cell.json").unlink()
    (tmp_path / "eval.json").write_text('{"factorvae": {"eval_accuracy_per_factor": [0.25]}}')
    assert bench.vote_accuracy(tmp_path) == pytest.approx([0.25])
    (tmp_path / "eval.json").unlink()
    assert bench.vote_accuracy(tmp_path) is None


def test_code_probe_finds_a_factor_one_unit_holds(bench) -> None:
    rng = np.random.RandomState(0)
    y = rng.randint(0, 3, 300)
    codes = rng.normal(size=(300, 4))
    codes[:, 2] += 5.0 * y  # unit 2 carries the factor
    tr, te = np.arange(200), np.arange(200, 300)
    assert bench.code_probe(codes, y, tr, te, "linear") > 0.9
    assert bench.code_probe(codes, y, tr, te, "trees") > 0.9
    assert bench.code_probe(np.delete(codes, 2, axis=1), y, tr, te, "linear") < 0.6

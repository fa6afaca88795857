"""benchmarks/disentangle.py: which preset and overrides each cell trains, the baseline
sweep, the table, and reuse of finished cells (no training here: the benchmark itself is
run by hand, its results are committed under benchmarks/results/)."""

from __future__ import annotations

import json

import pytest

from factordiff.config import load_config

BENCHMARK = "disentangle"  # the ``bench`` fixture (conftest.py) imports it


def test_cpu_recipe_at_64x64_keeps_the_quickstart_latent_grid(bench) -> None:
    name, overrides = bench.preset("encdiff_dyga_sd", "shapes3d", published=False)
    cfg = load_config(name, overrides)
    assert name == "quickstart_dyga"  # same EncDiff encoder as quickstart (issue 19)
    assert cfg.model.encoder.kind == "encdiff"
    assert cfg.data.name == "shapes3d" and cfg.anchoring.enabled
    assert cfg.model.first_stage.kind == "unshuffle"
    assert 64 // cfg.model.first_stage.patch_size == 8  # the quick start's 8x8 grid
    assert cfg.train.mixed_precision == "bf16"
    assert bench.preset("encdiff", "quickstart", published=False) == ("quickstart", [])


def test_published_configuration_uses_the_paper_presets(bench) -> None:
    assert bench.preset("encdiff", "shapes3d", published=True) == ("shapes3d", [])
    assert bench.preset("encdiff_dyga_sd", "dsprites", published=True) == ("dsprites_dyga", [])
    assert bench.preset("factorvae", "shapes3d", published=True) == ("factorvae_shapes3d", [])


def test_sweep_expands_the_study_grids_into_loadable_configs(bench) -> None:
    methods = bench.sweep_methods(["encdiff", "betavae", "factorvae"])
    assert methods[0] == "encdiff"
    assert methods[1:7] == [f"betavae:beta={b}" for b in (1, 2, 4, 6, 8, 16)]
    assert methods[7:] == [f"factorvae:gamma={g}" for g in (10, 20, 30, 40, 50, 100)]
    name, overrides = bench.preset("betatcvae:beta=8", "dsprites", published=False)
    cfg = load_config(name, overrides)
    assert cfg.model.family == "betatcvae" and cfg.model.vae.beta == 8.0


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ("vae", "unknown method 'vae'; expected one of encdiff"),
        ("betavae:gamma=3", "betavae:gamma=3: expected betavae:beta=VALUE"),
        ("encdiff:beta=1", "encdiff takes no setting"),
    ],
)
def test_bad_method_names_are_refused_with_the_expected_form(bench, method, message) -> None:
    with pytest.raises(ValueError, match=message):
        bench.preset(method, "shapes3d", published=False)


def test_table_gives_mean_and_sample_std_over_seeds(bench) -> None:
    rows = [
        {"dataset": "shapes3d", "method": "betavae", "seed": s, "train_s": t,
         "images_seen": 64, "peak_mib": 100, **dict.fromkeys(bench.COLUMNS, v)}
        for s, (v, t) in enumerate([(0.2, 10.0), (0.4, 30.0)])
    ]  # fmt: skip
    header, _, line = bench.summarise(rows)
    assert header.startswith("| dataset | method | eval_accuracy | disentanglement |")
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[:3] == ["shapes3d", "betavae", "0.300 +- 0.141"]
    assert cells[-3:] == ["20", "64", "100"]


def test_finished_cell_is_reused_and_a_changed_one_is_not(bench, tmp_path, monkeypatch) -> None:
    name, overrides = bench.preset("betavae", "dsprites", published=False)
    overrides += ["train.seed=3", "train.eval_every=0", "train.max_steps=5",
                  "train.checkpoint_every=5", "train.batch_size=64"]  # fmt: skip
    run = tmp_path / "dsprites-betavae-seed3"
    run.mkdir()
    row = {"method": "betavae", "dataset": "dsprites", "seed": 3, "train_s": 1.0}
    key = {"preset": name, "overrides": overrides, "eval_scale": 0.1}
    (run / "cell.json").write_text(json.dumps({"key": key, "row": row}))

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(bench.subprocess, "run", no_training)
    assert bench.run_cell("betavae", "dsprites", 3, 5, 0.1, tmp_path) == row
    with pytest.raises(AssertionError, match="trained again"):  # another eval scale
        bench.run_cell("betavae", "dsprites", 3, 5, 0.2, tmp_path)

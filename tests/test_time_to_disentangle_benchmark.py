"""benchmarks/time_to_disentangle.py: which config each variant trains, how a curve is read
from a run's log and how the table states the score at the time budget (no training here:
the benchmark is run by hand, its results are committed under benchmarks/results/)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from factordiff.config import load_config

BENCHMARK = "time_to_disentangle"  # the ``bench`` fixture (conftest.py) imports it


def test_every_variant_loads_and_v03_is_the_old_recipe(bench) -> None:
    for preset, overrides in bench.VARIANTS.values():
        load_config(preset, overrides)
    old = load_config(*bench.VARIANTS["v0.3"])
    assert old.model.first_stage.channels == 32 and old.model.first_stage.loss == "l1"
    assert old.train.mixed_precision == "no" and not old.train.cache_latents


def write_log(run: Path, records: list[dict]) -> None:
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def evaluation(step: int, seconds: float, fv: float, dci: float) -> dict:
    scores = {"factorvae/eval_accuracy": fv, "dci/disentanglement": dci, "mig/mig": 0.1}
    return {"step": step, "train_s": seconds, "eval": scores}


def test_curve_reads_minutes_and_scores_and_the_first_stage_time(bench, tmp_path) -> None:
    run = tmp_path / "run"
    write_log(run, [
        {"step": 0, "first_stage_step": 600, "rec_l1": 0.03, "train_s": 90.0},
        {"step": 50, "loss": 0.3, "train_s": 120.0},
        evaluation(500, 300.0, 0.8, 0.45),
        evaluation(1000, 1500.0, 0.85, 0.6),
    ])  # fmt: skip
    c = bench.curve(run)
    assert c["first_stage_minutes"] == 1.5
    assert [(p["step"], p["minutes"], p["FactorVAE"]) for p in c["points"]] == [
        (500, 5.0, 0.8), (1000, 25.0, 0.85)]  # fmt: skip
    assert bench.at_budget(c["points"], 20)["step"] == 500  # the last one made in time
    assert bench.at_budget(c["points"], 4) is None
    assert bench.finished(run, 1000) and not bench.finished(run, 2000)


def test_summary_gives_the_mean_and_a_t_interval_at_the_budget(bench) -> None:
    curves = {"recipe": {
        s: {"first_stage_minutes": 2.0,
            "points": [{"step": 500, "minutes": 5.0, "FactorVAE": fv, "DCI-D": 0.5, "MIG": 0.2}]}
        for s, fv in ((0, 0.80), (1, 0.82), (2, 0.84))}}  # fmt: skip
    row = bench.summarise(curves, "quickstart", 20)["recipe"]
    mean, half = row["FactorVAE"]
    assert mean == pytest.approx(0.82)
    assert half == pytest.approx(4.302653 * 0.02 / 3**0.5, rel=1e-5)  # t(0.975, 2) x sd / sqrt(n)
    args = SimpleNamespace(budget=20, threads=2, jobs=1, eval_every=500)
    text = bench.markdown({"recipe": row}, "quickstart", args)
    assert "| recipe | 3 | 2.0 | 0.820 ± 0.050 |" in text and "within 20 min" in text
    late = {"recipe": {0: {"first_stage_minutes": 2.0, "points": [
        {"step": 500, "minutes": 25.0, "FactorVAE": 0.9, "DCI-D": 0.6, "MIG": 0.3}]}}}  # fmt: skip
    assert "not reached" in bench.markdown(
        bench.summarise(late, "quickstart", 20), "quickstart", args)  # fmt: skip

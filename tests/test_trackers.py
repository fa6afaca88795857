"""train.log_with: a run logs to real experiment trackers, offline, under the same names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from factordiff.choices import tracker_names
from factordiff.config import load_config
from factordiff.errors import ConfigError
from factordiff.training import train
from factordiff.training.trackers import scalars
from run_helpers import tiny

DYGA = ["anchoring.enabled=true", "anchoring.every_steps=2", "anchoring.n_init=3",
        "anchoring.em_iters=5", "train.max_steps=4", "train.checkpoint_every=2"]  # fmt: skip


def logged(run: Path, key: str) -> list[tuple[int, float]]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r[key]) for r in lines if key in r]


def test_mlflow_to_a_local_folder_holds_what_the_run_logged(tmp_path, monkeypatch) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run = tmp_path / "run"
    train(tiny(*DYGA, "train.log_with=mlflow", "train.max_steps=2"), run, progress=False)
    train(tiny(*DYGA, "train.log_with=mlflow"), run, progress=False)  # resumed: same MLflow run
    client = MlflowClient(tracking_uri=(run / "mlruns").resolve().as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == "factordiff"]
    (record,) = client.search_runs([experiment.experiment_id])
    assert record.info.run_name == "run"
    assert record.info.run_id == (run / "mlflow_run_id").read_text().strip()
    history = client.get_metric_history(record.info.run_id, "train/loss")
    steps, values = zip(*logged(run, "loss"), strict=True)
    assert [m.step for m in history] == list(steps)  # one value per logged step, resumed too
    assert [m.value for m in history] == pytest.approx(values)
    lam = client.get_metric_history(record.info.run_id, "train/anchor_lam/0")
    assert [m.step for m in lam] == [3, 4]  # per unit, once anchors exist
    assert record.data.params["train.max_steps"] == "2"  # the config, stored on the fresh run
    artifacts = [a.path for a in client.list_artifacts(record.info.run_id, "figures")]
    assert artifacts == ["figures/anchors_00000002.png"]  # the DyGA anchor figure


def test_wandb_offline_records_the_run(tmp_path, monkeypatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    train(tiny(*DYGA, "train.log_with=wandb,tensorboard"), run, progress=False)
    (record,) = (run / "wandb").glob("offline-run-*/run-*.wandb")
    assert record.name.removeprefix("run-").removesuffix(".wandb") == (
        (run / "wandb_run_id").read_text().strip()
    )
    data = record.read_bytes()  # the offline record (protobuf) names what was logged
    for key in (b"train/loss", b"train/anchor_lam/0", b"anchors"):
        assert key in data, key
    assert any((run / "tb").iterdir())  # tensorboard beside it


def test_tracker_names_and_values() -> None:
    assert tracker_names("tensorboard") == ["tensorboard"]
    assert tracker_names("wandb, mlflow") == ["wandb", "mlflow"]
    assert tracker_names("none") == []
    with pytest.raises(ConfigError, match="unknown tracker.*wandbb.*choose from"):
        load_config("quickstart", ["train.log_with=wandbb"])
    assert scalars("train", {"loss": 0.5, "anchors": [3, 4], "note": "x", "ok": True}) == {
        "train/loss": 0.5, "train/anchors/0": 3, "train/anchors/1": 4, "train/ok": 1,
    }  # fmt: skip

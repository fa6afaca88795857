"""``training.run_log``: the training clock and what it logs."""

from __future__ import annotations

import json
from pathlib import Path

from factordiff.checkpoint import latest_checkpoint
from factordiff.training import train
from factordiff.training.run_log import TrainClock
from run_helpers import log, tiny


def test_train_clock_leaves_out_paused_time(monkeypatch) -> None:
    now = [100.0]
    monkeypatch.setattr("factordiff.training.run_log.time.perf_counter", lambda: now[0])
    clock = TrainClock(5.0)
    now[0] += 2.0
    with clock.paused():
        now[0] += 30.0  # an evaluation
    now[0] += 1.0
    assert clock.seconds() == 8.0


def test_training_time_is_logged_and_carried_across_a_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(tiny("train.max_steps=2", "train.checkpoint_every=2"), run, progress=False)
    saved = json.loads((latest_checkpoint(run) / "state.json").read_text())["train_s"]
    train(tiny("train.max_steps=4", "train.checkpoint_every=2"), run, progress=False)
    times = [r["train_s"] for r in log(run) if "loss" in r]
    assert len(times) == 4 and times == sorted(times) and times[2] >= saved > 0

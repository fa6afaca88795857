"""``checkpoint``: the newest complete checkpoints are kept, half-written ones ignored."""

from __future__ import annotations

import json
from pathlib import Path

from factordiff.checkpoint import latest_checkpoint
from factordiff.training import train
from run_helpers import tiny


def test_keep_last_k_checkpoints_and_ignore_half_written_ones(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(tiny("train.max_steps=8", "train.keep_checkpoints=2"), run, progress=False)
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["step_00000006", "step_00000008"]
    state = json.loads((run / "checkpoints" / "step_00000008" / "state.json").read_text())
    assert state["step"] == 8 and state["images_seen"] == 64 and "lr_scheduler" in state
    # A crash during a write leaves a temp dir or a dir without state.json: never picked.
    (run / "checkpoints" / ".tmp-step_00000010-1").mkdir()
    (run / "checkpoints" / "step_00000012").mkdir()
    assert latest_checkpoint(run).name == "step_00000008"

"""``training.run_dir``: a run directory keeps its config."""

from __future__ import annotations

from pathlib import Path

import pytest

from factordiff.errors import ConfigError
from factordiff.training import train
from run_helpers import tiny


def test_resuming_with_another_config_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(tiny("train.max_steps=2"), run, progress=False)
    with pytest.raises(ConfigError, match="model.encoder.n_units"):
        train(tiny("train.max_steps=4", "model.encoder.n_units=5"), run, progress=False)

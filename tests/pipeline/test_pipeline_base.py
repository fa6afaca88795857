"""``pipeline.base`` through ``FactorDiffusion``: save / load round trips, the
inference contracts, clear errors from ``from_pretrained``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import factordiff as fd
from factordiff.checkpoint import CheckpointError
from factordiff.pipeline import FactorDiffusion
from factordiff.training import train
from run_helpers import tiny


def test_pipeline_round_trip_and_contracts(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(tiny("train.max_steps=2"), run, progress=False)
    model = fd.FactorDiffusion.from_pretrained(run)
    images = fd.data.load("quickstart").images_at(np.arange(6))
    units = model.encode(images)
    assert units.shape == (6, 4, 8)
    assert model.represent(images).shape == (6, 4)
    generated = model.decode(units[:2], steps=3)
    assert generated.shape == (2, 32, 32, 3) and generated.dtype == np.uint8
    assert model.swap(images[:2], images[2:4], unit=1, steps=3).shape == (2, 32, 32, 3)
    with pytest.raises(ValueError, match="unit must be in"):
        model.swap(images[:2], images[2:4], unit=4)

    saved = model.save_pretrained(tmp_path / "saved")
    again = FactorDiffusion.from_pretrained(saved)
    assert torch.equal(again.encode(images), units)
    assert np.array_equal(again.decode(units[:2], steps=3), generated)
    half = model.save_pretrained(tmp_path / "half", dtype=torch.float16)
    assert (half / "model.safetensors").stat().st_size < 0.6 * (
        saved / "model.safetensors"
    ).stat().st_size
    torch.testing.assert_close(
        FactorDiffusion.from_pretrained(half).encode(images), units, atol=0.05, rtol=0.05
    )
    # the same seed gives the same images; another seed other images
    assert np.array_equal(model.decode(units[:2], steps=3, seed=0), generated)
    assert not np.array_equal(model.decode(units[:2], steps=3, seed=1), generated)


def test_from_pretrained_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no config.yaml"):
        FactorDiffusion.from_pretrained(tmp_path)
    run = tmp_path / "run"
    train(tiny("train.max_steps=2"), run, progress=False)
    (run / "config.yaml").write_text(
        (run / "config.yaml").read_text().replace("n_units: 4", "n_units: 5")
    )
    with pytest.raises(CheckpointError, match="does not fit this model"):
        FactorDiffusion.from_pretrained(run)

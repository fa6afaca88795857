"""``training.batches``: which rows each step trains on, on-device data, cached latents."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from factordiff.training import train
from factordiff.training.batches import StepBatches, caching_pays
from run_helpers import log, tiny, weights


def test_step_batches_cover_each_epoch_once() -> None:
    data = StepBatches(n_items=20, batch_size=6, seed=3)
    assert data.per_epoch == 3
    epoch0 = np.concatenate([data.rows(s, 0, 1) for s in range(3)])
    assert len(set(epoch0.tolist())) == 18
    halves = np.concatenate([data.rows(1, 0, 2), data.rows(1, 1, 2)])
    assert sorted(halves.tolist()) == sorted(data.rows(1, 0, 1).tolist())
    assert data.position(7) == {"epoch": 2, "batch_in_epoch": 1}
    assert not np.array_equal(np.sort(epoch0), np.sort(data.rows(3, 0, 1)))  # new shuffle


def test_cached_latents_train_as_the_per_step_encode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "factordiff.training.loop.caching_pays", lambda n, to_see: True
    )  # 24 < 2592
    ae = ["model.first_stage.kind=kl", "model.first_stage.channels=8",
          "model.first_stage.channel_mult=[1,2]", "model.first_stage.num_res_blocks=1",
          "model.first_stage.train_steps=2", "model.first_stage.embed_dim=2",
          "train.max_steps=3"]  # fmt: skip
    train(tiny(*ae), tmp_path / "encode", progress=False)
    train(tiny(*ae, "train.cache_latents=true"), tmp_path / "cache", progress=False)
    a, b = weights(tmp_path / "encode"), weights(tmp_path / "cache")
    # the same latents, encoded in other batch sizes: equal up to float rounding (which
    # Adam's normalised first steps amplify to ~1e-5 in a few weights)
    loss_a = [r["loss"] for r in log(tmp_path / "encode") if "loss" in r]
    loss_b = [r["loss"] for r in log(tmp_path / "cache") if "loss" in r]
    assert len(loss_b) == 3 and loss_b == pytest.approx(loss_a, rel=1e-5)
    assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)


def test_latents_are_not_cached_when_the_run_sees_fewer_images_than_the_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Caching encodes every image once: on a dataset larger than what is left to train on
    (Shapes3D with a CPU recipe) it costs more than it saves, so it is skipped, saying so."""
    assert caching_pays(2592, 3500 * 64) and not caching_pays(480_000, 3500 * 64)
    ae = ["model.first_stage.kind=kl", "model.first_stage.channels=8",
          "model.first_stage.channel_mult=[1,2]", "model.first_stage.num_res_blocks=1",
          "model.first_stage.train_steps=2", "model.first_stage.embed_dim=2",
          "train.max_steps=2", "train.cache_latents=true"]  # fmt: skip
    train(tiny(*ae), tmp_path / "run", progress=False)
    assert "not caching -- the run has 16 images left to see of 2,592" in capsys.readouterr().out


def test_on_device_data_gives_the_loader_batches(tmp_path: Path, monkeypatch) -> None:
    import factordiff.training.loop as train_module

    train(tiny("train.max_steps=3"), tmp_path / "loader", progress=False)

    def no_loader(*args):
        raise AssertionError("data.on_device must not build a DataLoader")

    monkeypatch.setattr(train_module, "batch_stream", no_loader)
    train(tiny("train.max_steps=3", "data.on_device=true"), tmp_path / "device", progress=False)
    a, b = weights(tmp_path / "loader"), weights(tmp_path / "device")
    for key in a:
        assert torch.equal(a[key], b[key]), key

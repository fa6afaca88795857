"""``training.first_stage``: phase 1 runs once, resumes bitwise, calibrates pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import factordiff as fd
from factordiff.pipeline import FactorDiffusion
from factordiff.training import train
from run_helpers import log, tiny, weights


def test_first_stage_is_trained_once_and_resume_stays_bitwise(tmp_path: Path) -> None:
    ae = ["model.first_stage.kind=kl", "model.first_stage.channels=8",
          "model.first_stage.channel_mult=[1,2]", "model.first_stage.num_res_blocks=1",
          "model.first_stage.train_steps=3", "model.first_stage.embed_dim=2"]  # fmt: skip
    train(tiny(*ae, "train.max_steps=4"), tmp_path / "straight", progress=False)
    train(tiny(*ae, "train.max_steps=2"), tmp_path / "split", progress=False)
    first = log(tmp_path / "split")
    assert [r["first_stage_step"] for r in first if "first_stage_step" in r] == [1, 2, 3]
    train(tiny(*ae, "train.max_steps=4"), tmp_path / "split", progress=False)
    assert log(tmp_path / "split")[:3] == first[:3]  # the first stage was not trained again
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert float(a["first_stage.scale"]) != 1.0 and bool(a["first_stage.calibrated"])
    model = FactorDiffusion.from_pretrained(tmp_path / "split")
    assert model.latent_shape == (2, 16, 16)


def test_scaled_pixels_are_calibrated_once_and_decode_in_range(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(tiny("train.max_steps=2", "model.first_stage.scale_pixels=true"), run, progress=False)
    model = FactorDiffusion.from_pretrained(run)
    images = model.prepare_images(fd.data.load("quickstart").images_at(np.arange(0, 2592, 37)))
    assert float(model.first_stage.scale) == pytest.approx(1 / float(images.std()), rel=0.3)
    z = model.first_stage.encode(images)
    assert float(z.std()) == pytest.approx(1.0, rel=0.3)  # what the noise schedule expects
    assert torch.allclose(model.first_stage.decode(z), images, atol=1e-6)  # still lossless
    out = model.decode(model.encode(images[:2]), steps=2, output_type="pt")
    assert out.shape == (2, 3, 32, 32) and out.abs().max() <= 1.0
    plain = tiny("train.max_steps=2")  # the default keeps pixels as they are
    assert float(FactorDiffusion(plain).first_stage.scale) == 1.0

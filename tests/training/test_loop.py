"""``training.loop``: training lowers the loss, layouts and processes change nothing,
the quick-start recipe trains on an image folder, the CLI drives it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from factordiff.checkpoint import latest_checkpoint
from factordiff.config import load_config
from factordiff.pipeline import FactorDiffusion
from factordiff.training import train
from run_helpers import TINY, log, tiny, weights


def test_loss_falls_in_a_short_training(tmp_path: Path) -> None:
    cfg = tiny("train.max_steps=60", "train.base_lr=2e-3", "train.checkpoint_every=60",
               "diffusion.prediction=epsilon")  # fmt: skip
    train(cfg, tmp_path / "run", progress=False)
    losses = [r["loss"] for r in log(tmp_path / "run") if "loss" in r]
    assert len(losses) == 60
    # at initialisation the prediction is 0 (zero-init output): loss = E|eps| = 0.80
    assert np.mean(losses[:3]) == pytest.approx(0.80, abs=0.02)
    assert np.mean(losses[-10:]) < 0.95 * np.mean(losses[:10])


def test_channels_last_trains_to_the_same_weights(tmp_path: Path) -> None:
    train(tiny("train.max_steps=2"), tmp_path / "nchw", progress=False)
    train(tiny("train.max_steps=2", "train.channels_last=true"), tmp_path / "nhwc", progress=False)
    a, b = weights(tmp_path / "nchw"), weights(tmp_path / "nhwc")
    # Another summation order changes near-zero gradients, which Adam's step normalises up
    # to lr = 1e-4 per step: the bound is two steps' worth, far below a weight's scale.
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=2e-4, msg=key)
    np.testing.assert_allclose(
        [r["loss"] for r in log(tmp_path / "nchw")],
        [r["loss"] for r in log(tmp_path / "nhwc")],
        rtol=1e-5,
    )


def assert_same_trajectory_as_accumulation(one: Path, ddp: Path) -> None:
    """A DDP run's weights and losses equal those of one process with accumulation."""
    a, b = weights(one), weights(ddp)
    for key in a:
        if "running_" in key or "num_batches_tracked" in key:
            continue  # BN statistics: DDP keeps rank 0's, accumulation sees both halves
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
    np.testing.assert_allclose(
        [r["loss"] for r in log(one)], [r["loss"] for r in log(ddp)], rtol=1e-5
    )


def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, capture_output=True, text=True, timeout=600, env=env, **kw)


def test_two_process_ddp_equals_one_process_with_accumulation(tmp_path: Path) -> None:
    """gloo DDP, 2 ranks x 4 images == 1 process x 2 micro-batches of 4 (global batch 8)."""
    common = ["-m", "factordiff", "train", "quickstart", *TINY, "train.max_steps=3"]
    single = _run([sys.executable, *common, "train.grad_accum=2", "--out", str(tmp_path / "one")])
    assert single.returncode == 0, single.stderr[-2000:]
    ddp = _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                "--master_port=29517", *common, "--out", str(tmp_path / "two")])  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert_same_trajectory_as_accumulation(tmp_path / "one", tmp_path / "two")


def test_two_process_checkpoint_resumes_on_one_process(tmp_path: Path) -> None:
    """A 2-rank run stopped at step 2 and resumed by 1 process with grad_accum=2 continues
    the 2-rank trajectory; the note printed on resume says how to keep it exact."""
    common = ["-m", "factordiff", "train", "quickstart", *TINY]
    two = tmp_path / "two"
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    ddp = _run([*launch, "--master_port=29523", *common, "train.max_steps=2", "--out", str(two)])
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert json.loads((latest_checkpoint(two) / "state.json").read_text())["processes"] == 2
    plain = _run([sys.executable, *common, "train.max_steps=3", "--out", str(two)])
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert "Set train.grad_accum=2 to continue it exactly" in plain.stdout
    (two / "checkpoints" / "step_00000003").rename(tmp_path / "inexact")  # back to step 2
    resumed = _run([sys.executable, *common, "train.max_steps=4", "train.grad_accum=2",
                    "--out", str(two)])  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stdout and "note:" not in resumed.stdout
    one = tmp_path / "one"
    single = _run([sys.executable, *common, "train.max_steps=4", "train.grad_accum=2",
                   "--out", str(one)])  # fmt: skip
    assert single.returncode == 0, single.stderr[-2000:]
    assert_same_trajectory_as_accumulation(one, two)


def test_cli_train_then_eval(tmp_path: Path) -> None:
    run = tmp_path / "run"
    res = _run([sys.executable, "-m", "factordiff", "train", "quickstart", *TINY,
                "train.max_steps=2", "--out", str(run)])  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert "fd.load_pretrained" in res.stdout
    res = _run([sys.executable, "-m", "factordiff", "eval", str(run), "--metrics", "mig,dci",
                "--scale", "0.02"])  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    scores = json.loads((run / "eval.json").read_text())
    assert 0 <= scores["mig"]["mig"] <= 1 and "disentanglement" in scores["dci"]
    assert scores["protocol"]["represents"] == "the units' scalars"  # which code was scored
    bad = _run([sys.executable, "-m", "factordiff", "train", "quickstart", "train.bach_size=3",
                "--out", str(run)])  # fmt: skip
    assert bad.returncode == 1 and "did you mean 'train.batch_size'" in bad.stderr


def test_quickstart_recipe_trains_on_a_64x64_image_folder_at_32(tmp_path: Path) -> None:
    """docs/training.md: your own images take the recipe changing only the number of units
    and the image size (64x64 images are downscaled to the recipe's 32x32)."""
    from PIL import Image

    root = tmp_path / "images"
    root.mkdir()
    lines = []
    for i, (hue, pos, size) in enumerate(np.ndindex(4, 4, 2)):
        img = np.zeros((64, 64, 3), np.uint8)
        side = 8 + 8 * size
        img[8 + 10 * pos : 8 + 10 * pos + side, 20 : 20 + side, hue % 3] = 200
        Image.fromarray(img).save(root / f"{i}.png")
        lines.append(f"{i}.png,{hue},{pos},{size}\n")
    (root / "factors.csv").write_text("file,hue,pos,size\n" + "".join(lines))
    cfg = load_config("quickstart", [
        "data.name=imagefolder", f"data.root={root}", "data.image_size=32",
        "model.encoder.n_units=6", "model.first_stage.train_steps=2", "train.max_steps=2",
        "train.batch_size=8", "train.eval_every=0", "train.checkpoint_every=2",
    ])  # fmt: skip
    train(cfg, tmp_path / "run", progress=False)
    model = FactorDiffusion.from_pretrained(tmp_path / "run")
    assert model.latent_shape == (3, 8, 8) and model.n_units == 6
    assert model.represent(np.asarray(Image.open(root / "0.png"))[None]).shape == (1, 6)

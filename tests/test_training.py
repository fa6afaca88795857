"""Training loop, checkpoints and the pipeline, on a tiny config (seconds on a CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import factordiff as fd
from factordiff.checkpoint import CheckpointError, latest_checkpoint, load_tensors
from factordiff.config import load_config
from factordiff.errors import ConfigError
from factordiff.pipeline import FactorDiffusion
from factordiff.training import train
from factordiff.training.batches import StepBatches, caching_pays
from factordiff.training.optim import lr_multiplier
from factordiff.training.run_log import TrainClock

TINY = [
    "model.first_stage.kind=unshuffle",
    "model.encoder.n_units=4",
    "model.encoder.unit_dim=8",
    "model.encoder.channels=16",
    "model.encoder.mlp_hidden=[8,16]",
    "model.unet.model_channels=16",
    "model.unet.channel_mult=[1,2]",
    "model.unet.num_res_blocks=1",
    "model.unet.attention_resolutions=[1]",
    "model.unet.num_heads=2",
    "train.batch_size=8",
    "train.warmup_steps=2",
    "train.base_lr=1e-4",
    "train.log_every=1",
    "train.checkpoint_every=2",
    "train.eval_every=0",
    "diffusion.sample_steps=4",
    "train.mixed_precision=no",  # the quick-start preset's CPU speed-ups, off unless tested
    "train.cache_latents=false",
]


def tiny(*extra: str):
    return load_config("quickstart", [*TINY, *extra])


def log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def weights(run: Path, name: str = "model") -> dict[str, torch.Tensor]:
    return load_tensors(latest_checkpoint(run), name)


def test_step_batches_cover_each_epoch_once() -> None:
    data = StepBatches(n_items=20, batch_size=6, seed=3)
    assert data.per_epoch == 3
    epoch0 = np.concatenate([data.rows(s, 0, 1) for s in range(3)])
    assert len(set(epoch0.tolist())) == 18
    halves = np.concatenate([data.rows(1, 0, 2), data.rows(1, 1, 2)])
    assert sorted(halves.tolist()) == sorted(data.rows(1, 0, 1).tolist())
    assert data.position(7) == {"epoch": 2, "batch_in_epoch": 1}
    assert not np.array_equal(np.sort(epoch0), np.sort(data.rows(3, 0, 1)))  # new shuffle


def test_loss_falls_in_a_short_training(tmp_path: Path) -> None:
    cfg = tiny("train.max_steps=60", "train.base_lr=2e-3", "train.checkpoint_every=60",
               "diffusion.prediction=epsilon")  # fmt: skip
    train(cfg, tmp_path / "run", progress=False)
    losses = [r["loss"] for r in log(tmp_path / "run") if "loss" in r]
    assert len(losses) == 60
    # at initialisation the prediction is 0 (zero-init output): loss = E|eps| = 0.80
    assert np.mean(losses[:3]) == pytest.approx(0.80, abs=0.02)
    assert np.mean(losses[-10:]) < 0.95 * np.mean(losses[:10])


def test_resume_is_bitwise_identical_to_an_uninterrupted_run(tmp_path: Path) -> None:
    train(tiny("train.max_steps=6"), tmp_path / "straight", progress=False)
    train(tiny("train.max_steps=3", "train.checkpoint_every=3"), tmp_path / "split", progress=False)
    # resumed with 2 prefetching loader workers: same batches, same result
    train(tiny("train.max_steps=6", "train.checkpoint_every=3", "data.num_workers=2"),
          tmp_path / "split", progress=False)  # fmt: skip
    for name in ("model", "ema", "optimizer"):
        a, b = weights(tmp_path / "straight", name), weights(tmp_path / "split", name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}/{key} differs after resume"
    straight = [r["loss"] for r in log(tmp_path / "straight")]
    split = [r["loss"] for r in log(tmp_path / "split")]
    assert straight == split  # resumed log keeps one line per step


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


def test_cosine_schedule_warms_up_then_decays_to_zero() -> None:
    cosine = tiny("train.warmup_steps=10", "train.max_steps=110", "train.lr_schedule=cosine").train
    constant = tiny("train.warmup_steps=10", "train.max_steps=110").train
    assert [lr_multiplier(s, cosine) for s in (0, 4, 9)] == [0.1, 0.5, 1.0]
    assert lr_multiplier(10, cosine) == 1.0
    assert lr_multiplier(60, cosine) == pytest.approx(0.5)
    assert lr_multiplier(110, cosine) == pytest.approx(0.0, abs=1e-12)
    assert [lr_multiplier(s, constant) for s in (0, 9, 60, 110)] == [0.1, 1.0, 1.0, 1.0]


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


def test_bf16_autocast_trains(tmp_path: Path) -> None:
    train(tiny("train.max_steps=2", "train.mixed_precision=bf16"), tmp_path / "run", progress=False)
    losses = [r["loss"] for r in log(tmp_path / "run")]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert all(v.dtype != torch.bfloat16 for v in weights(tmp_path / "run").values())  # fp32 master


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


def test_resuming_with_another_config_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(tiny("train.max_steps=2"), run, progress=False)
    with pytest.raises(ConfigError, match="model.encoder.n_units"):
        train(tiny("train.max_steps=4", "model.encoder.n_units=5"), run, progress=False)


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


def test_compile_falls_back_to_eager_when_the_compiler_fails(tmp_path, monkeypatch) -> None:
    def broken_compile(module):
        def call(*args):
            raise RuntimeError("no C++ compiler here\nlong details")

        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    train(tiny("train.max_steps=2"), tmp_path / "eager", progress=False)
    with pytest.warns(
        UserWarning,
        match=r"torch.compile failed \(RuntimeError: no C\+\+ compiler here\); training eagerly",
    ):
        train(tiny("train.max_steps=2", "train.compile=true"), tmp_path / "comp", progress=False)
    for key, value in weights(tmp_path / "eager").items():
        assert torch.equal(value, weights(tmp_path / "comp")[key]), key


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

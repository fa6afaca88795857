"""Training under real faults: kill -9, SIGTERM/SIGINT, a second writer, non-finite steps,
full or read-only disks, unsafe files. Each test injects the fault, none mocks the check.

The training processes are real ``factordiff train`` subprocesses on the tiny config, one
thread each, so that a resumed run can be compared bitwise with an uninterrupted one.
"""

from __future__ import annotations

import os
import pickle
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from factordiff.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_state,
    load_tensors,
    save_checkpoint,
)
from factordiff.models.autoencoder import FirstStage
from factordiff.models.unet import UNet
from factordiff.pipeline import FactorDiffusion
from factordiff.training import train
from factordiff.training.run_guard import RunDirError, TrainingStoppedError
from run_helpers import TINY, log, tiny

STEPS = 80
RUN_ARGS = [*TINY, f"train.max_steps={STEPS}", "train.checkpoint_every=4", "train.log_every=4"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def start(run: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "factordiff", "train", "quickstart", *RUN_ARGS, *extra,
           "--out", str(run)]  # fmt: skip
    # output to a file, not a pipe: a full pipe buffer would stall a long-running trainer
    output = open(run.parent / f"{run.name}.log", "w")  # noqa: SIM115 -- closed by the child's exit
    proc = subprocess.Popen(cmd, env=ENV, stdout=output, stderr=subprocess.STDOUT, text=True)
    proc.output_path = output.name  # type: ignore[attr-defined]
    return proc


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:  # never leave a trainer running behind a failed test
            proc.kill()
            proc.wait()
    return proc.returncode, Path(proc.output_path).read_text()


def wait_for(proc: subprocess.Popen, condition, timeout: float = 180, poll: float = 0.001):
    """Poll ``condition`` (every ``poll`` s); kill ``proc`` if it never comes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            proc.wait()
            raise AssertionError("the training process ended or hung before the awaited moment")
        time.sleep(poll)


def newest_step(run: Path) -> int:
    ckpt = latest_checkpoint(run)
    return -1 if ckpt is None else int(ckpt.name.split("_")[1])


def same_weights(a: Path, b: Path) -> None:
    for name in ("model", "ema", "optimizer"):
        ta, tb = load_tensors(latest_checkpoint(a), name), load_tensors(latest_checkpoint(b), name)
        assert ta.keys() == tb.keys()
        for k in ta:
            assert torch.equal(ta[k], tb[k]), f"{name}:{k} differs"


def tmp_checkpoints(run: Path) -> list[str]:
    root = run / "checkpoints"
    return [p for p in os.listdir(root) if p.startswith(".tmp-")] if root.is_dir() else []


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("reference") / "run"
    code, output = finish(start(run))
    assert code == 0, output
    return run


def test_kill_9_at_random_moments_resumes_to_the_same_weights(
    uninterrupted: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    rng = random.Random(0)

    def picked_is_complete() -> None:
        done = latest_checkpoint(run)
        if done is not None:  # whatever is picked is complete and readable
            load_tensors(done, "model")
            assert load_state(done)["step"] == int(done.name.split("_")[1])

    # The moment a checkpoint is being written: a write lasts milliseconds, so on a busy
    # machine the poller can see it and still kill too late; a few tries.
    for _ in range(5):
        proc = start(run)
        wait_for(proc, lambda: tmp_checkpoints(run), poll=0)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        picked_is_complete()
        if tmp_checkpoints(run):
            break
    else:
        raise AssertionError("in 5 tries no kill landed during a checkpoint write")
    for _ in range(3):  # once training has made progress, at a random moment of the next steps
        before = newest_step(run)
        proc = start(run)
        wait_for(proc, lambda b=before: newest_step(run) > b)
        time.sleep(rng.uniform(0.0, 0.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        picked_is_complete()
    assert newest_step(run) < STEPS, "the run finished before the last kill"
    code, output = finish(start(run))
    assert code == 0, output
    assert tmp_checkpoints(run) == []
    assert latest_checkpoint(run).name == f"step_{STEPS:08d}"
    same_weights(run, uninterrupted)
    steps = [r["step"] for r in log(run) if "loss" in r]
    assert steps == sorted(set(steps))  # the log has each step once after resumes


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_a_checkpoint_and_exits_with_a_resume_hint(
    signum: int, uninterrupted: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    proc = start(run)
    wait_for(proc, lambda: latest_checkpoint(run) is not None)
    proc.send_signal(signum)
    code, output = finish(proc)
    assert code == 128 + signum, output
    assert "Traceback" not in output
    assert f"stopped by {signal.Signals(signum).name} at step" in output
    assert "Resume with the same command" in output
    stopped_at = load_state(latest_checkpoint(run))["step"]
    assert 0 < stopped_at < STEPS
    code, output = finish(start(run))
    assert code == 0, output
    same_weights(run, uninterrupted)


def test_a_second_process_on_the_same_run_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = start(run, "train.max_steps=100000")
    try:
        wait_for(proc, lambda: latest_checkpoint(run) is not None)
        with pytest.raises(RunDirError, match=rf"being trained by another process .*{proc.pid}"):
            train(tiny(f"train.max_steps={STEPS}", "train.checkpoint_every=4"), run, progress=False)
    finally:
        proc.kill()
        proc.wait()
    # the lock dies with its holder (kill -9): the run can be taken over at once
    end = newest_step(run) + 4
    cfg = tiny(f"train.max_steps={end}", "train.checkpoint_every=4", "train.log_every=4")
    assert train(cfg, run, progress=False).name == f"step_{end:08d}"


# --- non-finite steps ---------------------------------------------------------------------


@pytest.fixture
def nan_at(monkeypatch) -> Iterator[set[int]]:
    """Calls of the U-Net (one per training step here) whose output becomes NaN."""
    bad: set[int] = set()
    calls = iter(range(10**9))
    forward = UNet.forward

    def poisoned(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        return out * float("nan") if next(calls) in bad else out

    monkeypatch.setattr(UNet, "forward", poisoned)
    yield bad


def test_nonfinite_steps_are_skipped_and_counted(nan_at: set[int], tmp_path: Path) -> None:
    nan_at.update({3, 4, 9})
    run = tmp_path / "run"
    train(tiny("train.max_steps=12", "train.checkpoint_every=4"), run, progress=False)
    state = load_state(latest_checkpoint(run))
    assert state["step"] == 12 and state["bad_steps"] == 3
    skipped = [r["step"] for r in log(run) if "skipped_nonfinite_step" in r]
    assert skipped == [4, 5, 10]
    weights = load_tensors(latest_checkpoint(run), "model")
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_a_streak_of_nonfinite_steps_stops_keeping_the_last_good_checkpoint(
    nan_at: set[int], tmp_path: Path
) -> None:
    nan_at.update(range(5, 10**6))  # diverged for good from the 6th step on
    run = tmp_path / "run"
    cfg = tiny("train.max_steps=30", "train.checkpoint_every=2", "train.max_bad_steps=4")
    with pytest.raises(
        TrainingStoppedError, match=r"4 steps in a row had a non-finite .*step_00000004"
    ):
        train(cfg, run, progress=False)
    assert [p.name for p in list_checkpoints(run)][-1] == "step_00000004"
    weights = load_tensors(latest_checkpoint(run), "model")
    assert all(torch.isfinite(w).all() for w in weights.values())


# --- the first-stage phase ----------------------------------------------------------------

FIRST_STAGE = ["model.first_stage.kind=kl", "model.first_stage.channels=8",
               "model.first_stage.channel_mult=[1,2]", "model.first_stage.num_res_blocks=1",
               "model.first_stage.embed_dim=2", "model.first_stage.train_steps=6",
               "train.max_steps=1", "train.checkpoint_every=4"]  # fmt: skip


def first_stage_log(run: Path) -> list[int]:
    return [r["first_stage_step"] for r in log(run) if "first_stage_step" in r]


@pytest.fixture(scope="module")
def first_stage_reference(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("first_stage") / "run"
    train(tiny(*FIRST_STAGE), run, progress=False)
    assert first_stage_log(run) == [1, 2, 3, 4, 5, 6]
    assert not (run / "first_stage").exists()  # its own checkpoints go with the step-0 one
    return run


@pytest.fixture
def fault_at(monkeypatch) -> Iterator[dict[int, Callable[[], None]]]:
    """First-stage steps (0-based) at whose start a fault is injected."""
    faults: dict[int, Callable[[], None]] = {}
    calls = iter(range(10**9))
    loss = FirstStage.reconstruction_loss

    def faulty(self, x):
        faults.pop(next(calls), lambda: None)()
        return loss(self, x)

    monkeypatch.setattr(FirstStage, "reconstruction_loss", faulty)
    yield faults


def same_first_stage_run(run: Path, reference: Path) -> None:
    same_weights(run, reference)  # model (first stage included), EMA, optimizer
    a = load_tensors(run / "checkpoints" / "step_00000000", "model")
    b = load_tensors(reference / "checkpoints" / "step_00000000", "model")
    assert [k for k in a if k.startswith("first_stage.")]
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("first_stage."))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_in_the_first_stage_keeps_it_and_resumes_bitwise(
    signum: int, fault_at, first_stage_reference: Path, tmp_path: Path, capsys
) -> None:
    run = tmp_path / "run"
    fault_at[2] = lambda: os.kill(os.getpid(), signum)  # arrives during step 3
    with pytest.raises(TrainingStoppedError, match="the phase resumes at step 3") as stopped:
        train(tiny(*FIRST_STAGE), run, progress=False)
    assert stopped.value.exit_code == 128 + signum
    name = signal.Signals(signum).name
    assert f"stopped by {name} in the first-stage phase at step 3 of 6" in str(stopped.value)
    # kept apart: a run directory holding a half-trained first stage is no model
    assert latest_checkpoint(run) is None
    with pytest.raises(CheckpointError, match="neither model.safetensors nor a complete"):
        FactorDiffusion.from_pretrained(run)
    kept = latest_checkpoint(run / "first_stage")
    assert kept.name == "step_00000003" and load_state(kept)["first_stage_step"] == 3
    assert first_stage_log(run) == [1, 2, 3]
    capsys.readouterr()
    train(tiny(*FIRST_STAGE), run, progress=False)
    assert "resuming the first-stage phase" in capsys.readouterr().out
    assert first_stage_log(run) == [1, 2, 3, 4, 5, 6]  # steps 4-6 trained once, after 3
    assert not (run / "first_stage").exists()
    same_first_stage_run(run, first_stage_reference)


def test_a_crash_in_the_first_stage_loses_only_the_steps_since_its_checkpoint(
    fault_at, first_stage_reference: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"

    def crash() -> None:  # a process dying mid-step (e.g. kill -9): nothing is saved
        raise RuntimeError("killed")

    fault_at[5] = crash  # in step 6, after step 5 was logged and step 4 checkpointed
    with pytest.raises(RuntimeError, match="killed"):
        train(tiny(*FIRST_STAGE), run, progress=False)
    assert latest_checkpoint(run) is None
    assert [p.name for p in list_checkpoints(run / "first_stage")] == ["step_00000004"]
    assert first_stage_log(run) == [1, 2, 3, 4, 5]
    train(tiny(*FIRST_STAGE), run, progress=False)
    assert first_stage_log(run) == [1, 2, 3, 4, 5, 6]  # step 5's line is not doubled
    same_first_stage_run(run, first_stage_reference)


# --- disks --------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[callable]:
    """Mount tmpfs file systems of a given size (and read-only on request); needs root."""
    mounted: list[Path] = []

    def mount(size_kib: int, read_only: bool = False) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        opts = f"size={size_kib}k" + (",ro" if read_only else "")
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(point)],
                             capture_output=True, text=True)  # fmt: skip
        if res.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip()})")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        if subprocess.run(["umount", str(point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(point)], capture_output=True)


def test_full_disk_is_refused_before_training(small_disk, tmp_path: Path) -> None:
    disk = small_disk(256)
    with pytest.raises(RunDirError, match=r"MiB free, but 3 checkpoints of this model"):
        train(tiny("train.max_steps=4"), disk / "run", progress=False)
    assert list_checkpoints(disk / "run") == []


def test_read_only_run_directory_is_refused_before_training(small_disk) -> None:
    disk = small_disk(1024, read_only=True)
    with pytest.raises(RunDirError, match=r"cannot write to the run directory .*Read-only"):
        train(tiny("train.max_steps=4"), disk / "run", progress=False)


def test_disk_filling_up_mid_write_keeps_the_earlier_checkpoints(small_disk) -> None:
    disk = small_disk(512)
    small = {"model": {"w": torch.zeros(1000)}}
    save_checkpoint(disk, 1, small, {"step": 1})
    big = {"model": {"w": torch.zeros(200_000)}}  # 800 KB: does not fit
    with pytest.raises(CheckpointError, match=r"No space left on device.*newest: step_00000001"):
        save_checkpoint(disk, 2, big, {"step": 2})
    assert [p.name for p in list_checkpoints(disk)] == ["step_00000001"]
    assert os.listdir(disk / "checkpoints") == ["step_00000001"]  # no half-written left


# --- unsafe files -------------------------------------------------------------------------


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_files_are_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"w": _Payload(marker)})
    ckpt = tmp_path / "run" / "checkpoints" / "step_00000001"
    ckpt.mkdir(parents=True)
    (ckpt / "model.safetensors").write_bytes(payload)
    (ckpt / "state.json").write_text('{"step": 1}')
    with pytest.raises(CheckpointError, match="model.safetensors cannot be read"):
        load_tensors(ckpt, "model")
    weights = tmp_path / "inception.pth"
    weights.write_bytes(payload)
    from factordiff.metrics.fid import FIDWeightsError, load_inception

    with pytest.raises(FIDWeightsError, match="could not read"):
        load_inception(weights)
    assert not marker.exists()


def test_every_torch_load_is_weights_only() -> None:
    src = Path(__file__).parents[1] / "src"
    for path in src.rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path}:{n}"

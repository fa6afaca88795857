"""``training.state``: a resumed run continues bitwise as an unbroken one."""

from __future__ import annotations

from pathlib import Path

import torch

from factordiff.training import train
from run_helpers import log, tiny, weights


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

"""``training.optim``: the learning-rate schedule and compilation's eager fallback."""

from __future__ import annotations

import pytest
import torch

from factordiff.training import train
from factordiff.training.optim import lr_multiplier
from run_helpers import tiny, weights


def test_cosine_schedule_warms_up_then_decays_to_zero() -> None:
    cosine = tiny("train.warmup_steps=10", "train.max_steps=110", "train.lr_schedule=cosine").train
    constant = tiny("train.warmup_steps=10", "train.max_steps=110").train
    assert [lr_multiplier(s, cosine) for s in (0, 4, 9)] == [0.1, 0.5, 1.0]
    assert lr_multiplier(10, cosine) == 1.0
    assert lr_multiplier(60, cosine) == pytest.approx(0.5)
    assert lr_multiplier(110, cosine) == pytest.approx(0.0, abs=1e-12)
    assert [lr_multiplier(s, constant) for s in (0, 9, 60, 110)] == [0.1, 1.0, 1.0, 1.0]


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

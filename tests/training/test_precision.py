"""``training.precision``: bf16 only where the machine computes it in hardware."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from factordiff.checkpoint import latest_checkpoint, load_tensors
from factordiff.config import load_config
from factordiff.training import precision, train
from run_helpers import log, tiny, weights

VAE_TINY = ["train.max_steps=2", "train.batch_size=8", "train.checkpoint_every=2",
        "train.eval_every=0", "train.log_every=1"]  # fmt: skip


def test_bf16_is_kept_on_a_gpu_and_other_choices_pass_through(monkeypatch) -> None:
    monkeypatch.setattr(precision, "native_cpu_bf16", lambda: False)
    assert precision.training_precision("bf16", on_gpu=True) == ("bf16", None)
    assert precision.training_precision("no", on_gpu=False) == ("no", None)
    assert precision.training_precision("fp16", on_gpu=False) == ("fp16", None)
    monkeypatch.setattr(precision, "native_cpu_bf16", lambda: True)
    assert precision.training_precision("bf16", on_gpu=False) == ("bf16", None)


def test_a_cpu_without_bf16_trains_in_fp32_says_so_and_logs_it(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(precision, "native_cpu_bf16", lambda: False)
    asked, fp32 = tmp_path / "bf16", tmp_path / "fp32"
    train(load_config("betavae_quickstart", [*VAE_TINY, "train.mixed_precision=bf16"]), asked,
          progress=False)  # fmt: skip
    assert "this CPU has no bf16 instructions" in capsys.readouterr().out
    train(load_config("betavae_quickstart", VAE_TINY), fp32, progress=False)
    a, b = (load_tensors(latest_checkpoint(r), "model") for r in (asked, fp32))
    assert all(torch.equal(a[k], b[k]) for k in a)  # what fp32 trains, bitwise
    log = [json.loads(x) for x in (asked / "metrics.jsonl").read_text().splitlines()]
    assert {"step": 0, "mixed_precision_used": "no"}.items() <= log[0].items()
    assert "mixed_precision_used" not in (fp32 / "metrics.jsonl").read_text()


def test_a_run_resumed_in_another_precision_says_so_and_logs_it(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """Begun on a CPU without bf16 (fp32), resumed on one with it (bf16): mixed, and said."""
    run = tmp_path / "run"
    monkeypatch.setattr(precision, "native_cpu_bf16", lambda: False)
    train(load_config("betavae_quickstart", [*VAE_TINY, "train.mixed_precision=bf16"]), run,
          progress=False)  # fmt: skip
    monkeypatch.setattr(precision, "native_cpu_bf16", lambda: True)
    capsys.readouterr()
    more = [*VAE_TINY, "train.mixed_precision=bf16", "train.max_steps=3"]
    train(load_config("betavae_quickstart", more), run, progress=False)
    assert "trained with mixed_precision=no, this machine trains the rest with bf16" in (
        capsys.readouterr().out
    )
    switched = [r for r in log(run) if "mixed_precision_before" in r]
    assert switched == [{"step": 2, "mixed_precision_used": "bf16", "mixed_precision_before": "no"}]


def test_bf16_autocast_trains(tmp_path: Path) -> None:
    train(tiny("train.max_steps=2", "train.mixed_precision=bf16"), tmp_path / "run", progress=False)
    losses = [r["loss"] for r in log(tmp_path / "run") if "loss" in r]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert all(v.dtype != torch.bfloat16 for v in weights(tmp_path / "run").values())  # fp32 master

"""``training.precision``: bf16 only where the machine computes it in hardware."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from factordiff.checkpoint import latest_checkpoint, load_tensors
from factordiff.config import load_config
from factordiff.training import precision, train

TINY = ["train.max_steps=2", "train.batch_size=8", "train.checkpoint_every=2",
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
    train(load_config("betavae_quickstart", [*TINY, "train.mixed_precision=bf16"]), asked,
          progress=False)  # fmt: skip
    assert "this CPU has no bf16 instructions" in capsys.readouterr().out
    train(load_config("betavae_quickstart", TINY), fp32, progress=False)
    a, b = (load_tensors(latest_checkpoint(r), "model") for r in (asked, fp32))
    assert all(torch.equal(a[k], b[k]) for k in a)  # what fp32 trains, bitwise
    log = [json.loads(x) for x in (asked / "metrics.jsonl").read_text().splitlines()]
    assert {"step": 0, "mixed_precision_used": "no"}.items() <= log[0].items()
    assert "mixed_precision_used" not in (fp32 / "metrics.jsonl").read_text()

"""A short EncDiff run of the quick-start recipe is pinned: the paired DyGA grid
(benchmarks/dyga_paired.py) keeps finished EncDiff cells only while EncDiff trains as it did
when they ran, so a change that alters EncDiff training (initialisation, data order, noise
or timestep draws, the loss, the optimiser) must fail here, not silently invalidate cells.

The fixture holds each step's loss and a fingerprint of every weight tensor (sum and sum of
squares) after 3 first-stage and 4 diffusion steps. They are compared to a tolerance, not
bitwise: CPUs and thread counts pick different float kernels (AMD EPYC vs Intel Xeon, 1 vs
2 threads). Measured between 1 and 2 threads: losses 2e-7 relative, weight sums up to 1.4e-4
absolute (Adam's first steps are +-lr whatever the gradient's size, so a gradient near 0 can
flip one update). A change of what is computed (another initialisation, batch, noise or
timestep) moves the losses by far more than 1e-4 relative and weight sums by O(1).
Regenerate (only for an intended change, saying so in the commit):
``python tests/test_encdiff_pinned.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from factordiff.checkpoint import latest_checkpoint, load_tensors
from factordiff.config import load_config
from factordiff.training import train

FIXTURE = Path(__file__).parent / "fixtures" / "encdiff_pinned.json"
#: the quick-start recipe shrunk to seconds; its KL first stage, fp32, latents per step
PINNED_RUN = [
    "model.first_stage.channels=8", "model.first_stage.channel_mult=[1,2]",
    "model.first_stage.train_steps=3", "model.encoder.n_units=4", "model.encoder.unit_dim=8",
    "model.encoder.channels=16", "model.encoder.mlp_hidden=[8,16]",
    "model.unet.model_channels=16", "model.unet.num_heads=2", "train.batch_size=8",
    "train.warmup_steps=2", "train.base_lr=1e-4", "train.max_steps=4", "train.log_every=1",
    "train.checkpoint_every=4", "train.eval_every=0", "train.mixed_precision=no",
    "train.cache_latents=false", "train.seed=3",
]  # fmt: skip


def pinned_numbers(run_dir: Path) -> dict:
    train(load_config("quickstart", PINNED_RUN), run_dir, progress=False)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    weights = load_tensors(latest_checkpoint(run_dir), "model")
    return {
        "first_stage_loss": [r["rec_l1"] for r in lines if "first_stage_step" in r],
        "loss": [r["loss"] for r in lines if "loss" in r],
        "weights": {
            k: [float(v.double().sum()), float(v.double().pow(2).sum())]
            for k, v in sorted(weights.items())
            if v.is_floating_point()
        },
    }


def test_a_short_encdiff_run_trains_as_pinned(tmp_path: Path) -> None:
    pinned = json.loads(FIXTURE.read_text())
    now = pinned_numbers(tmp_path / "run")
    assert now["first_stage_loss"] == pytest.approx(pinned["first_stage_loss"], rel=1e-4)
    assert now["loss"] == pytest.approx(pinned["loss"], rel=1e-4)
    assert now["weights"].keys() == pinned["weights"].keys()
    moved = [k for k, v in now["weights"].items()
             if v != pytest.approx(pinned["weights"][k], rel=1e-4, abs=1e-3)]  # fmt: skip
    assert moved == [], f"weights differ from the pinned run: {moved[:5]}"


if __name__ == "__main__":
    import tempfile

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        numbers = pinned_numbers(Path(tmp) / "run")
    FIXTURE.write_text(json.dumps(numbers, indent=1) + "\n")
    print(f"wrote {FIXTURE}", file=sys.stderr)

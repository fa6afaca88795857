"""What the training tests share: a tiny quick-start config (seconds on a CPU) and
readers of a run's log and weights."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from factordiff.checkpoint import latest_checkpoint, load_tensors
from factordiff.config import load_config

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

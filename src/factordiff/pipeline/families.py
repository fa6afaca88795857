"""The model families, in one table: which class a config or a saved folder builds.

Training, ``fd.load_pretrained`` and the CLI all build through here, so a new family is one
file in this package plus one row of ``FAMILIES``; the config validates ``model.family``
against this table's keys.
"""

from __future__ import annotations

from pathlib import Path

import torch

from factordiff.config import Config, load_config
from factordiff.pipeline.base import ImageModel
from factordiff.pipeline.encdiff import FactorDiffusion
from factordiff.pipeline.vae import VAEModel
from factordiff.shipped import resolve_model

#: ``model.family`` -> the class that trains, saves and loads it
FAMILIES: dict[str, type[ImageModel]] = {
    name: cls for cls in (FactorDiffusion, VAEModel) for name in cls.families
}


def build_model(cfg: Config) -> ImageModel:
    """A freshly initialised model of the family ``model.family`` names."""
    return FAMILIES[cfg.model.family](cfg)


def load_pretrained(
    path: str | Path, *, device: str | torch.device = "cpu", use_ema: bool = True
) -> ImageModel:
    """``from_pretrained`` of the class the saved config's ``model.family`` names: a run
    directory, a ``save_pretrained`` folder or a shipped model's name."""
    path = resolve_model(path)
    family = load_config(path / "config.yaml").model.family
    return FAMILIES[family].from_pretrained(path, device=device, use_ema=use_ema)

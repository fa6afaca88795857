"""The model families, in one table: which class a config or a saved folder builds, and
the dataset a config names.

Training, ``load_pretrained`` and the CLI all build through here, so a new family is one
row of ``FAMILIES``, and the model classes never import each other to dispatch.
"""

from __future__ import annotations

from pathlib import Path

import torch

from factordiff.baseline_pipeline import VAEModel
from factordiff.config import Config, load_config
from factordiff.data import load
from factordiff.data.base import FactorDataset
from factordiff.errors import ConfigError
from factordiff.pipeline import FactorDiffusion, ImageModel
from factordiff.shipped import resolve_model

#: ``model.family`` -> the class that trains, saves and loads it (the config validates the
#: family name, so every valid config has a row)
FAMILIES: dict[str, type[ImageModel]] = {
    "diffusion": FactorDiffusion,
    "betavae": VAEModel,
    "betatcvae": VAEModel,
    "factorvae": VAEModel,
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


def load_dataset(cfg: Config) -> FactorDataset:
    """The dataset ``data`` names, with the loading options only some datasets take."""
    kwargs: dict = {}
    if cfg.data.in_memory:
        kwargs["in_memory"] = True
    if cfg.data.cache_dir:
        kwargs["cache_dir"] = cfg.data.cache_dir
    try:
        return load(cfg.data.name, root=cfg.data.root, **kwargs)
    except TypeError as exc:  # an option the dataset's class does not take
        raise ConfigError(
            f"data.in_memory / data.cache_dir: not supported for dataset {cfg.data.name!r} "
            f"with data.root={cfg.data.root!r} ({exc})"
        ) from None

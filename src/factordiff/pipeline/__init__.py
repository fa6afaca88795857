"""The trained models, one file per family: ``base`` (``ImageModel``, what every family
shares), ``encdiff`` (``FactorDiffusion``: EncDiff, DyGA + Skip Dropout), ``vae`` (the
beta-VAE family baselines); ``families`` maps ``model.family`` to its class."""

from factordiff.pipeline.base import ImageModel, ParamGroup, resolve_image_size
from factordiff.pipeline.encdiff import FactorDiffusion
from factordiff.pipeline.families import FAMILIES, build_model, load_pretrained
from factordiff.pipeline.vae import VAEModel

__all__ = [
    "FAMILIES",
    "FactorDiffusion",
    "ImageModel",
    "ParamGroup",
    "VAEModel",
    "build_model",
    "load_pretrained",
    "resolve_image_size",
]

"""factordiff: disentangled representation learning with diffusion models."""

from __future__ import annotations

import importlib
from typing import Any

from factordiff import data
from factordiff._version import __version__
from factordiff.errors import FactordiffError

__all__ = [
    "FactorDiffusion",
    "FactordiffError",
    "__version__",
    "data",
    "load_pretrained",
    "metrics",
]


def __getattr__(name: str) -> Any:
    """Import heavy parts (metrics: scikit-learn, LightGBM; the model: torch, diffusers)
    on first use, so that ``import factordiff`` and the data commands stay fast."""
    if name == "metrics":
        return importlib.import_module("factordiff.metrics")
    if name == "FactorDiffusion":
        return importlib.import_module("factordiff.pipeline").FactorDiffusion
    if name == "load_pretrained":
        return importlib.import_module("factordiff.pipeline").load_pretrained
    raise AttributeError(f"module 'factordiff' has no attribute {name!r}")

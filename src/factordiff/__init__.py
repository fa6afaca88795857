"""factordiff: disentangled representation learning with diffusion models."""

from __future__ import annotations

import importlib
from typing import Any

from factordiff import data
from factordiff.errors import FactordiffError

__version__ = "0.1.0"
__all__ = ["FactordiffError", "__version__", "data", "metrics"]


def __getattr__(name: str) -> Any:
    """Import heavy subpackages (metrics pulls in scikit-learn, LightGBM, torch) on first use."""
    if name == "metrics":
        return importlib.import_module("factordiff.metrics")
    raise AttributeError(f"module 'factordiff' has no attribute {name!r}")

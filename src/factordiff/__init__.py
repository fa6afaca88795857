"""factordiff: disentangled representation learning with diffusion models."""

from factordiff import data
from factordiff.errors import FactordiffError

__version__ = "0.1.0"
__all__ = ["FactordiffError", "__version__", "data"]

"""Disentanglement metrics, defined and sampled as in disentanglement_lib.

Array metrics take ``codes`` (n, n_codes) float and ``factors`` (n, n_factors) int;
sampling metrics take a representation function (uint8 images -> codes) and a
``FactorDataset``. One metric per module, its definition in the module docstring.
The functions share their modules' names (``factordiff.metrics.mig`` is the function);
import helpers from the modules directly, e.g. ``from factordiff.metrics.fid import
frechet_distance``.
"""

from factordiff.metrics.beta_vae import beta_vae
from factordiff.metrics.dci import dci
from factordiff.metrics.downstream import downstream
from factordiff.metrics.evaluate import HEADLINE, PROTOCOL, evaluate, headline
from factordiff.metrics.factor_vae import factor_vae
from factordiff.metrics.infomec import infomec
from factordiff.metrics.mig import mig
from factordiff.metrics.modularity import modularity
from factordiff.metrics.sap import sap
from factordiff.metrics.tad import tad
from factordiff.metrics.udr import udr
from factordiff.metrics.utils import MetricInputError


def __getattr__(name: str):
    """``fid`` loads torch; import it only when asked for."""
    if name == "fid":
        from factordiff.metrics.fid import fid

        globals()["fid"] = fid  # the submodule import bound the module to this name
        return fid
    raise AttributeError(f"module 'factordiff.metrics' has no attribute {name!r}")


__all__ = [
    "PROTOCOL",
    "MetricInputError",
    "beta_vae",
    "dci",
    "downstream",
    "evaluate",
    "headline",
    "HEADLINE",
    "factor_vae",
    "fid",
    "infomec",
    "mig",
    "modularity",
    "sap",
    "tad",
    "udr",
]

"""Turning a model's latent units into the flat codes the metrics expect.

Models with vector units return (B, N, D). The DyGA paper evaluates them by reducing each
unit to one number with PCA (fitted per unit over a sample of the dataset); they can also
be flattened to N*D codes. The choice changes the numbers, so it is explicit and
recorded in every result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from factordiff.choices import REPRESENTATIONS as MODES
from factordiff.metrics.utils import MetricInputError, Represent

#: Images represented to learn the output's shape; all fit images only when fitting PCA.
PROBE_IMAGES = 16


@dataclass
class UnitPCA:
    """First principal component of each unit: (n, N, D) -> (n, N)."""

    mean: np.ndarray  # (N, D)
    components: np.ndarray  # (N, D), unit norm, sign fixed: largest |loading| positive

    @classmethod
    def fit(cls, units: np.ndarray) -> UnitPCA:
        units = np.asarray(units, dtype=np.float64)
        if units.ndim != 3:
            raise MetricInputError(f"per-unit PCA needs (n, N, D) units, got {units.shape}")
        mean = units.mean(axis=0)
        comps = np.zeros_like(mean)
        for u in range(units.shape[1]):
            centred = units[:, u] - mean[u]
            _, _, vt = np.linalg.svd(centred, full_matrices=False)
            v = vt[0]
            comps[u] = v if v[np.argmax(np.abs(v))] >= 0 else -v
        return cls(mean, comps)

    def transform(self, units: np.ndarray) -> np.ndarray:
        return np.einsum("bnd,nd->bn", np.asarray(units, np.float64) - self.mean, self.components)


def reduce_representation(
    represent: Represent, fit_images: np.ndarray | None, mode: str = "auto"
) -> tuple[Represent, str]:
    """A representation function giving 2-D codes, and the mode actually used.

    ``scalars``: the output as given (must be 2-D). ``pca``: per-unit PCA fitted on
    ``represent(fit_images)``. ``flatten``: (B, N*D). ``auto``: 2-D as given, 3-D -> pca.
    The shape is read from a few images, so scalar codes cost no pass over ``fit_images``.
    """
    if mode not in MODES:
        raise MetricInputError(f"representation must be one of {', '.join(MODES)}; got {mode!r}")
    if fit_images is None:
        raise MetricInputError("fit_images are needed to inspect the representation")
    probe = np.asarray(represent(fit_images[:PROBE_IMAGES]))
    if probe.ndim == 2:
        if mode in ("pca", "flatten"):
            raise MetricInputError(
                f"representation={mode!r} needs vector units (B, N, D); the model gives "
                f"scalar codes {probe.shape}"
            )
        return represent, "scalars"
    if probe.ndim != 3:
        raise MetricInputError(
            f"representation output must be (B, n) or (B, N, D), got {probe.shape}"
        )
    if mode == "scalars":
        raise MetricInputError(
            f"the model gives vector units {probe.shape}: use representation='pca' or 'flatten'"
        )
    if mode == "flatten":
        return (lambda images: np.asarray(represent(images)).reshape(len(images), -1)), "flatten"
    pca = UnitPCA.fit(np.asarray(represent(fit_images)))
    return (lambda images: pca.transform(represent(images))), "pca"

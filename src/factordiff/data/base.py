"""The ``FactorDataset`` protocol and the factor-grid machinery shared by every dataset.

A ground-truth dataset is a full grid over its factors: every combination of factor
classes is exactly one image, and images are stored/indexed in C order over the factors
(the last factor varies fastest), as in disentanglement_lib. ``factors_to_index`` and
``index_to_factors`` are that bijection.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from factordiff.errors import DatasetError

RandomLike = np.random.RandomState | np.random.Generator | int | None


@runtime_checkable
class FactorDataset(Protocol):
    """What every dataset offers; metrics, training and visualisation rely only on this."""

    name: str
    factor_names: tuple[str, ...]
    factor_sizes: tuple[int, ...]
    image_shape: tuple[int, int, int]

    def __len__(self) -> int: ...

    def images(self, factors: np.ndarray) -> np.ndarray: ...

    def images_at(self, indices: np.ndarray) -> np.ndarray: ...

    def sample_factors(self, n: int, rng: RandomLike = None) -> np.ndarray: ...

    def factors_to_index(self, factors: np.ndarray) -> np.ndarray: ...

    def index_to_factors(self, indices: np.ndarray) -> np.ndarray: ...


def as_random_state(rng: RandomLike) -> np.random.RandomState | np.random.Generator:
    """Accept a seed, a legacy ``RandomState`` (disentanglement_lib's) or a ``Generator``."""
    if rng is None or isinstance(rng, int | np.integer):
        return np.random.RandomState(rng)
    if isinstance(rng, np.random.RandomState | np.random.Generator):
        return rng
    raise TypeError(f"rng must be a seed, RandomState or Generator, got {type(rng).__name__}")


class GridDataset:
    """Base class for datasets that are a full grid over their factors.

    Subclasses set the class attributes and implement ``_render(factors)`` (procedural)
    or ``_read(indices)`` (file-backed). ``factor_values`` holds, per factor, the
    published value of each class (e.g. scale 0.5..1 for dSprites), so factors are always
    integer class indices and the values are only a lookup.
    """

    name: str = ""
    factor_names: tuple[str, ...] = ()
    factor_sizes: tuple[int, ...] = ()
    image_shape: tuple[int, int, int] = (64, 64, 3)
    #: True when factors are real generative factors (False: CelebA/imagefolder index only).
    has_ground_truth: bool = True
    #: Optional binary attributes (n, n_attributes) in {0, 1}, e.g. CelebA's 40.
    attributes: np.ndarray | None = None
    attribute_names: tuple[str, ...] = ()

    @property
    def factor_values(self) -> tuple[np.ndarray, ...]:
        """Published value of every class of every factor (default: the class index)."""
        return tuple(np.arange(s, dtype=np.float64) for s in self.factor_sizes)

    def __len__(self) -> int:
        return int(np.prod(self.factor_sizes, dtype=np.int64))

    def __repr__(self) -> str:
        pairs = zip(self.factor_names, self.factor_sizes, strict=True)
        factors = ", ".join(f"{n}={s}" for n, s in pairs)
        kind = type(self).__name__
        return f"<{kind} {self.name!r}: {len(self)} images {self.image_shape}, {factors}>"

    # --- the index <-> factors bijection (C order, last factor fastest) ---------------
    def check_factors(self, factors: np.ndarray) -> np.ndarray:
        """Return ``factors`` as an int64 (B, n_factors) array, or raise a clear error."""
        factors = np.asarray(factors)
        if factors.ndim == 1 and factors.shape[0] == len(self.factor_sizes):
            factors = factors[None]
        if factors.ndim != 2 or factors.shape[1] != len(self.factor_sizes):
            raise DatasetError(
                f"{self.name}: factors must have shape (B, {len(self.factor_sizes)}) "
                f"for factors {self.factor_names}, got {factors.shape}"
            )
        if not np.issubdtype(factors.dtype, np.integer) and not np.all(np.mod(factors, 1) == 0):
            raise DatasetError(
                f"{self.name}: factors are integer class indices, got non-integer values"
            )
        factors = factors.astype(np.int64)
        sizes = np.asarray(self.factor_sizes)
        bad = (factors < 0) | (factors >= sizes)
        if bad.any():
            col = int(np.argwhere(bad)[0][1])
            raise DatasetError(
                f"{self.name}: factor {self.factor_names[col]!r} must be in "
                f"[0, {sizes[col] - 1}], got {int(factors[bad][0])}"
            )
        return factors

    def factors_to_index(self, factors: np.ndarray) -> np.ndarray:
        factors = self.check_factors(factors)
        return np.ravel_multi_index(tuple(factors.T), self.factor_sizes).astype(np.int64)

    def index_to_factors(self, indices: np.ndarray) -> np.ndarray:
        indices = self.check_indices(indices)
        return np.stack(np.unravel_index(indices, self.factor_sizes), axis=1).astype(np.int64)

    def check_indices(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        indices = np.atleast_1d(np.asarray(indices, dtype=np.int64))
        if indices.ndim != 1:
            raise DatasetError(f"{self.name}: indices must be 1-D, got shape {indices.shape}")
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise DatasetError(
                f"{self.name}: index out of range [0, {len(self) - 1}]: "
                f"{int(indices[(indices < 0) | (indices >= len(self))][0])}"
            )
        return indices

    def sample_factors(self, n: int, rng: RandomLike = None) -> np.ndarray:
        """Sample ``n`` factor combinations i.i.d. uniformly over the grid.

        With a ``RandomState`` this draws exactly as disentanglement_lib does (one
        ``randint`` per factor, in factor order), so metric runs seeded with
        ``RandomState(0)`` see the same points as the reference code.
        """
        rng = as_random_state(rng)
        out = np.zeros((n, len(self.factor_sizes)), dtype=np.int64)
        for i, size in enumerate(self.factor_sizes):
            if isinstance(rng, np.random.RandomState):
                out[:, i] = rng.randint(size, size=n)
            else:
                out[:, i] = rng.integers(size, size=n)
        return out

    # --- images ------------------------------------------------------------------------
    def images(self, factors: np.ndarray) -> np.ndarray:
        """uint8 images (B, H, W, C) for integer factor classes (B, n_factors)."""
        return self.images_at(self.factors_to_index(factors))

    def images_at(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """uint8 images (B, H, W, C) at dataset indices."""
        indices = self.check_indices(indices)
        if indices.size == 0:
            return np.zeros((0, *self.image_shape), dtype=np.uint8)
        return self._read(indices)

    def _read(self, indices: np.ndarray) -> np.ndarray:
        """Default for procedural datasets: render from the factors."""
        return self._render(self.index_to_factors(indices))

    def _render(self, factors: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class MemmapGridDataset(GridDataset):
    """A grid dataset whose images live in a memory-mapped (N, H, W, C) array.

    Subclasses implement ``_open`` to set ``self._images``. The map is dropped when the
    dataset is pickled (DataLoader workers), because numpy would copy the whole array;
    each process re-opens it on first read.
    """

    _images: np.ndarray | None = None

    def _open(self) -> None:
        raise NotImplementedError

    def _read(self, indices: np.ndarray) -> np.ndarray:
        if self._images is None:
            self._open()
        assert self._images is not None
        return np.asarray(self._images[indices])

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_images"] = None
        return state

"""3D Shapes from the published file ``3dshapes.h5`` (Burgess & Kim 2018).

The file holds ``images`` (480000, 64, 64, 3) uint8 and ``labels`` (480000, 6) float64,
in C order over floor hue 10, wall hue 10, object hue 10, scale 8, shape 4, orientation 15
(last fastest), the order disentanglement_lib uses.

Images are read lazily with h5py (5.9 GB would not fit everywhere); ``in_memory=True``
reads them all once for the fastest random access. h5py's fancy indexing needs sorted,
unique indices, so a batch is sorted and de-duplicated, read, and put back in the
caller's order. The HDF5 handle is opened per process (handles must not cross a fork)
and is not pickled, so the dataset can be handed to data-loader workers.

On opening, keys, shapes and dtypes are checked, and the labels at a few indices (the
corners of the grid and a few random points) must equal the published factor values at
the C-order position, so a file in another order fails loudly instead of mislabelling.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import h5py
import numpy as np

from factordiff.data.base import GridDataset
from factordiff.data.npz import check_array_spec, locate_file
from factordiff.errors import DatasetError

FILENAME = "3dshapes.h5"

#: Published value of every class, per factor (from the dataset's README).
PUBLISHED_VALUES: tuple[np.ndarray, ...] = (
    np.linspace(0.0, 0.9, 10),  # floor hue
    np.linspace(0.0, 0.9, 10),  # wall hue
    np.linspace(0.0, 0.9, 10),  # object hue
    np.linspace(0.75, 1.25, 8),  # scale
    np.arange(4, dtype=np.float64),  # shape
    np.linspace(-30.0, 30.0, 15),  # orientation (degrees)
)

#: Reading a contiguous block is faster than a point selection when it is this dense.
_DENSE_FACTOR = 4


class Shapes3DFile(GridDataset):
    """Shapes3D read from ``3dshapes.h5``; ``root`` is its folder or the file itself."""

    name = "shapes3d"
    factor_names = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
    factor_sizes = (10, 10, 10, 8, 4, 15)
    image_shape = (64, 64, 3)

    def __init__(self, root: str | os.PathLike[str], in_memory: bool = False) -> None:
        self.path = locate_file(root, FILENAME, self.name)
        self.in_memory = in_memory
        self._file: h5py.File | None = None
        self._pid: int | None = None
        self._memory: np.ndarray | None = None
        self._validate()
        if in_memory:
            self._memory = self._read_block(0, len(self))

    @property
    def factor_values(self) -> tuple[np.ndarray, ...]:
        """Hues 0, 0.1, .., 0.9; scale 0.75..1.25; shape 0..3; orientation -30..30 degrees."""
        return tuple(v[:s].copy() for v, s in zip(PUBLISHED_VALUES, self.factor_sizes, strict=True))

    # --- file access -------------------------------------------------------------------
    def _h5(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as exc:
                raise DatasetError(
                    f"{self.path}: cannot open as HDF5; truncated or corrupt? ({exc})"
                ) from exc
            self._pid = os.getpid()
        return self._file

    def _dataset(self, key: str) -> h5py.Dataset:
        f = self._h5()
        try:
            found = f.get(key)
            keys = sorted(f.keys())
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            raise DatasetError(f"{self.path}: corrupt HDF5 file ({exc})") from exc
        if not isinstance(found, h5py.Dataset):
            raise DatasetError(
                f"{self.path}: no dataset {key!r} (has {keys}); expected 'images' and 'labels'"
            )
        return found

    def close(self) -> None:
        """Close the HDF5 handle (reopened on the next read)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state

    def _validate(self) -> None:
        n = len(self)
        images = self._dataset("images")
        labels = self._dataset("labels")
        where = f"{self.path}: dataset"
        image_spec = (n, *self.image_shape)
        check_array_spec(f"{where} 'images'", images.dtype, images.shape, np.uint8, image_spec)
        label_spec = (n, len(self.factor_sizes))
        check_array_spec(f"{where} 'labels'", labels.dtype, labels.shape, np.float64, label_spec)
        sizes = np.asarray(self.factor_sizes)
        corners = [np.zeros_like(sizes), sizes - 1]
        corners += [np.where(np.arange(len(sizes)) == i, sizes - 1, 0) for i in range(len(sizes))]
        check = np.concatenate(
            [self.factors_to_index(np.stack(corners)), np.random.RandomState(0).randint(n, size=8)]
        )
        check = np.unique(check)
        got = self._guard(lambda: labels[check], "labels")
        factors = self.index_to_factors(check)
        want = np.stack([v[factors[:, i]] for i, v in enumerate(self.factor_values)], axis=1)
        bad = ~np.isclose(got, want, rtol=0, atol=1e-3).all(axis=1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DatasetError(
                f"{self.path}: labels[{int(check[i])}] = {np.round(got[i], 4).tolist()}, "
                f"expected {np.round(want[i], 4).tolist()} for factors {factors[i].tolist()} "
                f"in C order over {self.factor_names}; not the published 3dshapes.h5?"
            )

    def _guard(self, read: Callable[[], Any], what: str) -> np.ndarray:
        try:
            return np.asarray(read())
        except (OSError, RuntimeError, ValueError) as exc:
            raise DatasetError(
                f"{self.path}: reading {what!r} failed; truncated or corrupt? ({exc})"
            ) from exc

    # --- reading -----------------------------------------------------------------------
    def _read_block(self, start: int, stop: int) -> np.ndarray:
        images = self._dataset("images")
        return self._guard(lambda: images[start:stop], "images")

    def _read(self, indices: np.ndarray) -> np.ndarray:
        if self._memory is not None:
            return self._memory[indices]
        unique, inverse = np.unique(indices, return_inverse=True)
        lo, hi = int(unique[0]), int(unique[-1]) + 1
        if hi - lo <= _DENSE_FACTOR * len(unique):
            data = self._read_block(lo, hi)[unique - lo]
        else:
            images = self._dataset("images")
            data = self._guard(lambda: images[unique], "images")
        return data[inverse.reshape(-1)]

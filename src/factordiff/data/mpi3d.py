"""MPI3D (Gondal et al. 2019) from the published ``.npz`` files, memory-mapped.

``mpi3d_toy.npz``, ``mpi3d_realistic.npz`` and ``mpi3d_real.npz`` each hold one array
``images``: 1,036,800 RGB images of 64x64, uint8, in C order over
colour 6, shape 6, size 2, camera height 3, background 3, horizontal axis 40,
vertical axis 40 (the array may also be stored with those seven axes unflattened).

disentanglement_lib hard-codes colour 4 and shape 4 for the toy and realistic variants.
That matches an early release (460,800 images) only: the files distributed today (new
links posted in 2024, issue 4 of rr-learning/disentanglement_dataset) have 6 colours and
6 shapes for all three variants, so we use (6, 6, 2, 3, 3, 40, 40) everywhere and say so
when a file of the old size is found.

The array is 12.7 GB: a stored (uncompressed) member is memory-mapped in place; a
compressed one is extracted once into a cache ``.npy`` (see :mod:`factordiff.data.npz`),
which needs that much free disk space in ``cache_dir`` (default: next to the file).
"""

from __future__ import annotations

import os

import numpy as np

from factordiff.data.base import MemmapGridDataset
from factordiff.data.npz import inspect_npz_member, locate_file, memmap_npz_member
from factordiff.errors import DatasetError

FACTOR_SIZES = (6, 6, 2, 3, 3, 40, 40)
#: Images in the early release with 4 colours and 4 shapes (disentanglement_lib's sizes).
_OLD_RELEASE_COUNT = 4 * 4 * 2 * 3 * 3 * 40 * 40


class _MPI3DFile(MemmapGridDataset):
    """Shared loader; subclasses set ``name`` and ``filename``."""

    filename: str = ""
    factor_names = (
        "color",
        "shape",
        "size",
        "camera_height",
        "background",
        "horizontal",
        "vertical",
    )
    factor_sizes = FACTOR_SIZES
    image_shape = (64, 64, 3)

    def __init__(
        self, root: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None
    ) -> None:
        self.path = locate_file(root, self.filename, self.name)
        self.cache_dir = cache_dir
        self._images: np.ndarray | None = None
        self._check_header()
        self._open()

    def _check_header(self) -> None:
        member = inspect_npz_member(self.path, "images")
        where = f"{self.path}: array 'images'"
        if member.dtype != np.uint8:
            raise DatasetError(f"{where}: dtype {member.dtype}, expected uint8")
        flat = (len(self), *self.image_shape)
        grid = (*self.factor_sizes, *self.image_shape)
        if member.shape in (flat, grid):
            if member.fortran_order:
                raise DatasetError(f"{where}: stored in Fortran order; expected C order")
            return
        hint = ""
        if member.shape and member.shape[0] == _OLD_RELEASE_COUNT:
            hint = (
                " This is the early 4-colour/4-shape release; download the current files"
                " (6 colours, 6 shapes)."
            )
        raise DatasetError(f"{where}: shape {member.shape}, expected {flat} or {grid}.{hint}")

    def _open(self) -> None:
        images = memmap_npz_member(self.path, "images", dtype=np.uint8, cache_dir=self.cache_dir)
        # A C-order memmap reshapes to the flat layout without copying.
        self._images = images.reshape(len(self), *self.image_shape)


class MPI3DToy(_MPI3DFile):
    """MPI3D-toy: simple renderings (``mpi3d_toy.npz``); ``root`` is its folder or the file."""

    name = "mpi3d_toy"
    filename = "mpi3d_toy.npz"


class MPI3DRealistic(_MPI3DFile):
    """MPI3D-realistic: realistic renderings (``mpi3d_realistic.npz``)."""

    name = "mpi3d_realistic"
    filename = "mpi3d_realistic.npz"


class MPI3DReal(_MPI3DFile):
    """MPI3D-real: photographs of the real robot (``mpi3d_real.npz``)."""

    name = "mpi3d_real"
    filename = "mpi3d_real.npz"

"""Cars3D (Reed et al. 2015, "Deep Visual Analogy-Making") from the published ``.mat`` files.

``nips2015-analogy-data.tar.gz`` unpacks to ``data/cars/`` with 183 MATLAB files
``car_XXX_mesh.mat``; each holds ``im``, uint8 (128, 128, 3, 24, 4) =
(height, width, channel, azimuth, elevation). As in disentanglement_lib, the factors are
elevation 4, azimuth 24, object 183 in C order, each image is shrunk to 64x64 with PIL's
``thumbnail`` and a Lanczos (antialiasing) filter, and inside one file image
``azimuth * 4 + elevation`` has factors (elevation, azimuth).

Object order: disentanglement_lib numbers objects in the order the directory listing
returns the files, which depends on the file system (a bug: the same files give different
labels on different machines). We number them by sorted file name, so object ``k`` is the
same car everywhere; ``object_names[k]`` gives its file stem.

Decoding 183 files and resizing 17,568 images takes seconds, so the resized array
(17568, 64, 64, 3) is written once as a cache ``.npy`` (atomically, stamped with the
source files' names, sizes and times) next to the files or in ``cache_dir``, and is
memory-mapped from then on.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from factordiff.data.base import MemmapGridDataset
from factordiff.data.npz import (
    CACHE_VERSION,
    file_signature,
    read_cached_npy,
    resolve_cache_dir,
    write_cached_npy,
)
from factordiff.errors import DatasetError

N_OBJECTS = 183
MESH_SHAPE = (128, 128, 3, 24, 4)  # H, W, C, azimuth, elevation
CACHE_NAME = "cars3d_64x64.npy"


def find_cars_folder(root: str | os.PathLike[str]) -> Path:
    """The folder holding the ``.mat`` files: ``root``, ``root/cars`` or ``root/data/cars``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"cars3d: {root} is not a folder (expected data/cars/ with .mat files)")
    for folder in (root / "data" / "cars", root / "cars", root):
        if folder.is_dir() and any(folder.glob("*.mat")):
            return folder
    raise DatasetError(
        f"cars3d: no .mat files in {root}, {root / 'cars'} or {root / 'data' / 'cars'} "
        f"(expected {N_OBJECTS} car_XXX_mesh.mat from nips2015-analogy-data.tar.gz)"
    )


class Cars3D(MemmapGridDataset):
    """Cars3D from its ``.mat`` files; ``root`` holds ``data/cars/`` or is that folder."""

    name = "cars3d"
    factor_names = ("elevation", "azimuth", "object")
    factor_sizes = (4, 24, N_OBJECTS)
    image_shape = (64, 64, 3)

    def __init__(
        self, root: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None
    ) -> None:
        self.folder = find_cars_folder(root)
        self.files = tuple(sorted(self.folder.glob("*.mat"), key=lambda p: p.name))
        if len(self.files) != N_OBJECTS:
            raise DatasetError(
                f"cars3d: found {len(self.files)} .mat files in {self.folder}, expected "
                f"{N_OBJECTS} (car_XXX_mesh.mat); incomplete download or extra files?"
            )
        #: File stem of every object class, in class order.
        self.object_names = tuple(p.stem for p in self.files)
        self.cache_path = resolve_cache_dir(self.folder, cache_dir) / CACHE_NAME
        self._images: np.ndarray | None = None
        self._open()

    def _expected_stamp(self) -> dict[str, Any]:
        signatures = json.dumps([file_signature(p) for p in self.files])
        return {
            "version": CACHE_VERSION,
            "kind": "cars3d-64x64-lanczos",
            "sources": hashlib.sha256(signatures.encode()).hexdigest(),
        }

    def _open(self) -> None:
        shape = (len(self), *self.image_shape)
        stamp = self._expected_stamp()
        hit = read_cached_npy(self.cache_path, stamp, np.uint8, shape)
        if hit is None:
            hit = write_cached_npy(self.cache_path, stamp, np.uint8, shape, self._fill)
        self._images = hit[0]

    def _fill(self, target: np.ndarray) -> None:
        grid = target.reshape(*self.factor_sizes, *self.image_shape)
        # PIL and zlib release the GIL, so threads give a near-linear speed-up here.
        workers = max(1, min(8, os.cpu_count() or 1))
        with ThreadPoolExecutor(workers) as pool:
            for obj, small in enumerate(pool.map(load_small, self.files)):
                grid[:, :, obj] = small.transpose(1, 0, 2, 3, 4)


def load_mesh(path: Path) -> np.ndarray:
    """``im`` of one file as a (azimuth, elevation, H, W, C) uint8 view, after checking it."""
    from scipy.io import loadmat

    try:
        mat = loadmat(path, variable_names=["im"])
    except Exception as exc:  # scipy raises many types for a damaged file
        raise DatasetError(
            f"{path}: cannot read as a MATLAB file; truncated or corrupt? ({exc})"
        ) from exc
    if "im" not in mat:
        raise DatasetError(f"{path}: no variable 'im' (expected uint8 {MESH_SHAPE})")
    im = mat["im"]
    if im.dtype != np.uint8 or im.shape != MESH_SHAPE:
        raise DatasetError(
            f"{path}: 'im' is {im.dtype} {im.shape}, expected uint8 {MESH_SHAPE} "
            "(height, width, channel, azimuth, elevation)"
        )
    return np.transpose(im, (3, 4, 0, 1, 2))


def load_small(path: Path) -> np.ndarray:
    """All 96 images of one file shrunk to 64x64: (azimuth, elevation, 64, 64, 3)."""
    mesh = load_mesh(path)
    n_az, n_el = mesh.shape[:2]
    small = [shrink(mesh[a, e]) for a in range(n_az) for e in range(n_el)]
    return np.stack(small).reshape(n_az, n_el, *small[0].shape)


def shrink(image: np.ndarray) -> np.ndarray:
    """128x128 -> 64x64 as disentanglement_lib does: ``thumbnail`` with Lanczos."""
    pic = Image.fromarray(np.ascontiguousarray(image))
    pic.thumbnail((64, 64), Image.Resampling.LANCZOS)
    return np.asarray(pic)

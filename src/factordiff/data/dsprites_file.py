"""dSprites from the published file ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz``.

The file (Matthey et al. 2017, github deepmind/dsprites-dataset) is a compressed ``.npz``
with ``imgs`` (737280, 64, 64) uint8 in {0, 1}, ``latents_values`` float64 (737280, 6),
``latents_classes`` int64 (737280, 6) and ``metadata``, a pickled dict. Column 0 of the
latents is colour (one value) and is dropped, leaving shape 3, scale 6, orientation 40,
pos_x 32, pos_y 32 in C order, as in disentanglement_lib.

Why the loader looks like this:

* ``metadata`` is never read: unpickling it would run code from the file. The factor
  sizes are the published constants and are checked against ``latents_classes``.
* ``imgs`` is 3 GB once decompressed. It is streamed out of the zip in chunks and stored
  bit-packed (``np.packbits``, 512 bytes per image, 377 MB) in a cache ``.npy`` next to
  the file (or in ``cache_dir``), stamped with a version and the source's size and mtime,
  then memory-mapped; each batch is unpacked on read. Building it takes seconds and
  happens once.
* ``latents_classes`` must be the C-order grid (row i == ``np.unravel_index(i, sizes)``),
  otherwise indexing by factors would silently return the wrong sprites.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from factordiff.data.base import GridDataset
from factordiff.data.npz import (
    CACHE_VERSION,
    NpzMember,
    file_signature,
    inspect_npz_member,
    iter_npz_rows,
    locate_file,
    read_cached_npy,
    read_npz_member,
    resolve_cache_dir,
    write_cached_npy,
)
from factordiff.errors import DatasetError

FILENAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
#: Sizes of all six latents in the file, colour first.
FILE_LATENT_SIZES = (1, 3, 6, 40, 32, 32)
N_IMAGES = int(np.prod(FILE_LATENT_SIZES))
PACKED_BYTES = 64 * 64 // 8
#: Images re-encoded per chunk while building the cache (32 MB of decoded pixels).
_BUILD_ROWS = 8192


class DSpritesFile(GridDataset):
    """dSprites read lazily from the published ``.npz``; images (B, 64, 64, 1) in {0, 255}.

    ``root`` is the folder holding the file, or the file itself. ``cache_dir`` is where
    the bit-packed image cache goes (default: next to the file; a user cache folder when
    that is read-only).
    """

    name = "dsprites"
    factor_names = ("shape", "scale", "orientation", "pos_x", "pos_y")
    factor_sizes = FILE_LATENT_SIZES[1:]
    image_shape = (64, 64, 1)

    def __init__(
        self, root: str | os.PathLike[str], cache_dir: str | os.PathLike[str] | None = None
    ) -> None:
        self.path = locate_file(root, FILENAME, self.name)
        self.cache_path = resolve_cache_dir(self.path.parent, cache_dir) / (
            f"{self.path.stem}.imgs-packbits.npy"
        )
        self._packed: np.ndarray | None = None
        self._factor_values: tuple[np.ndarray, ...] = ()
        self._open()

    @property
    def factor_values(self) -> tuple[np.ndarray, ...]:
        """Published latent values (shape 1..3, scale 0.5..1, orientation in radians, x, y)."""
        return self._factor_values

    # --- cache -------------------------------------------------------------------------
    def _expected_stamp(self) -> dict[str, Any]:
        return {
            "version": CACHE_VERSION,
            "kind": "dsprites-imgs-packbits",
            "source": file_signature(self.path),
        }

    def _open(self) -> None:
        shape = (N_IMAGES, PACKED_BYTES)
        hit = read_cached_npy(self.cache_path, self._expected_stamp(), np.uint8, shape)
        if hit is None or "values" not in hit[1]:
            hit = self._build_cache()
        self._packed, stamp = hit
        self._factor_values = tuple(np.asarray(v, dtype=np.float64) for v in stamp["values"])

    def _build_cache(self) -> tuple[np.ndarray, dict[str, Any]]:
        path = self.path
        # Check every header before the long part, so a wrong file fails at once.
        imgs = inspect_npz_member(path, "imgs", dtype=np.uint8, shape=(N_IMAGES, 64, 64))
        inspect_npz_member(path, "latents_classes", dtype=np.int64, shape=(N_IMAGES, 6))
        inspect_npz_member(path, "latents_values", dtype=np.float64, shape=(N_IMAGES, 6))
        classes = read_npz_member(path, "latents_classes")
        values = _grid_values(path, classes, read_npz_member(path, "latents_values"))
        del classes

        def fill(target: np.ndarray) -> dict[str, Any]:
            _pack_images(imgs, target)
            return {"values": [v.tolist() for v in values]}

        return write_cached_npy(
            self.cache_path, self._expected_stamp(), np.uint8, (N_IMAGES, PACKED_BYTES), fill
        )

    # --- reading -----------------------------------------------------------------------
    def _read(self, indices: np.ndarray) -> np.ndarray:
        if self._packed is None:  # after unpickling
            self._open()
        assert self._packed is not None
        bits = np.unpackbits(np.asarray(self._packed[indices]), axis=1)
        return (bits * np.uint8(255)).reshape(len(indices), 64, 64, 1)

    def __getstate__(self) -> dict[str, Any]:
        # Never pickle the memory map (numpy would copy all 377 MB); reopen lazily instead.
        state = self.__dict__.copy()
        state["_packed"] = None
        return state


def _grid_values(path: Path, classes: np.ndarray, values: np.ndarray) -> list[np.ndarray]:
    """Check that the latents form the C-order grid; the value of each class per factor.

    Every row is checked (``classes[i] == np.unravel_index(i, sizes)``), one column at a
    time so the temporary arrays stay small.
    """
    rows = np.arange(N_IMAGES, dtype=np.int64)
    strides = np.cumprod((1, *FILE_LATENT_SIZES[::-1]))[-2::-1]
    out = []
    for col, size in enumerate(FILE_LATENT_SIZES):
        want = (rows // strides[col]) % size
        if not np.array_equal(classes[:, col], want):
            row = int(np.flatnonzero(classes[:, col] != want)[0])
            expected = [int(e) for e in np.unravel_index(row, FILE_LATENT_SIZES)]
            raise DatasetError(
                f"{path}: latents_classes is not the C-order grid over {FILE_LATENT_SIZES}: "
                f"row {row} is {classes[row].tolist()}, expected {expected}; "
                "not the published dSprites file?"
            )
        table = values[np.arange(size) * strides[col], col]
        if not np.allclose(values[:, col], table[want], rtol=0, atol=1e-6):
            raise DatasetError(
                f"{path}: latents_values column {col} is not one value per class; "
                "not the published dSprites file?"
            )
        if col > 0:  # column 0 is colour, a single value: dropped
            out.append(np.asarray(table, dtype=np.float64))
    return out


def _pack_images(imgs: NpzMember, target: np.ndarray) -> None:
    """Stream ``imgs`` out of the zip into ``target`` (N, 512), 8 pixels per byte."""
    for start, block in iter_npz_rows(imgs, _BUILD_ROWS):
        if block.max(initial=0) > 1:
            raise DatasetError(
                f"{imgs.path}: imgs must be binary (0/1), found value {int(block.max())} "
                f"in images {start}..{start + len(block) - 1}"
            )
        target[start : start + len(block)] = np.packbits(block.reshape(len(block), -1), axis=1)

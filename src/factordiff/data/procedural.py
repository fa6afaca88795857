"""Base class for procedural datasets: render on demand, optionally cache the whole grid.

Procedural datasets never materialise the full grid in memory; they render only the
requested indices. With ``cache_dir`` set, the full grid is rendered once (in chunks,
with a progress bar) into a ``.npy`` file whose name carries the renderer version and
the render parameters, then memory-mapped. It is written by the same atomic, stamped
writer as the published-file caches (``npz.write_cached_npy``), and, like them, the map
is not pickled into DataLoader workers. Bumping ``render_version`` after a change to the
renderer makes old caches unreachable instead of silently wrong.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from factordiff.data.base import MemmapGridDataset
from factordiff.data.npz import read_cached_npy, write_cached_npy


class ProceduralDataset(MemmapGridDataset):
    render_version: int = 1

    def __init__(self, cache_dir: str | Path | None = None) -> None:
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None

    def render_params(self) -> dict:
        """Parameters that change the pixels (part of the cache key)."""
        return {"image_shape": list(self.image_shape)}

    def cache_path(self) -> Path | None:
        if self.cache_dir is None:
            return None
        key = json.dumps(self.render_params(), sort_keys=True).encode()
        digest = hashlib.sha256(key).hexdigest()[:10]
        return self.cache_dir / f"{self.name}-v{self.render_version}-{digest}.npy"

    def _read(self, indices: np.ndarray) -> np.ndarray:
        if self.cache_dir is None:
            return self._render(self.index_to_factors(indices))
        return super()._read(indices)

    def _open(self) -> None:
        path = self.cache_path()
        assert path is not None
        stamp = {"render_version": self.render_version, **self.render_params()}
        shape = (len(self), *self.image_shape)
        cached = read_cached_npy(path, stamp, np.uint8, shape)
        if cached is None:
            cached = write_cached_npy(path, stamp, np.uint8, shape, self._render_all)
        self._images = cached[0]

    def _render_all(self, out: np.ndarray, chunk: int = 2048) -> None:
        for start in tqdm(range(0, len(self), chunk), desc=f"caching {self.name}", unit="chunk"):
            idx = np.arange(start, min(start + chunk, len(self)))
            out[idx] = self._render(self.index_to_factors(idx))

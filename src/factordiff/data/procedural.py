"""Base class for procedural datasets: render on demand, optionally cache the whole grid.

Procedural datasets never materialise the full grid in memory; they render only the
requested indices. With ``cache_dir`` set, the full grid is rendered once (in chunks,
with a progress bar) into a ``.npy`` file whose name carries the renderer version and
the render parameters, then memory-mapped; bumping ``render_version`` after a change to
the renderer makes old caches unreachable instead of silently wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from factordiff.data.base import GridDataset


class ProceduralDataset(GridDataset):
    render_version: int = 1

    def __init__(self, cache_dir: str | Path | None = None) -> None:
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self._cache: np.ndarray | None = None

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
        if self._cache is None:
            self._cache = self._open_cache()
        return np.asarray(self._cache[indices])

    def _open_cache(self, chunk: int = 2048) -> np.ndarray:
        path = self.cache_path()
        assert path is not None
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            out = np.lib.format.open_memmap(
                tmp, mode="w+", dtype=np.uint8, shape=(len(self), *self.image_shape)
            )
            for start in tqdm(
                range(0, len(self), chunk), desc=f"caching {self.name}", unit="chunk"
            ):
                idx = np.arange(start, min(start + chunk, len(self)))
                out[idx] = self._render(self.index_to_factors(idx))
            out.flush()
            del out
            os.replace(tmp, path)  # atomic: a crash never leaves a half-written cache
        return np.load(path, mmap_mode="r")

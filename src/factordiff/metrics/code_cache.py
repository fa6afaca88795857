"""Codes of a dataset's images by index, each image represented at most once.

The sampling metrics (FactorVAE: ~1 million images at the protocol; beta-VAE: ~2 million)
draw far more images than a finite dataset holds (the quickstart grid has 2,592, Shapes3D
480,000). With a deterministic representation, an image's code does not depend on when it
is drawn, so ``CodeCache`` represents each distinct image the first time one of its
indices is requested and answers every later request from memory.

The metrics use it through :func:`factordiff.metrics.utils.represent_factors`: pass a
``CodeCache`` wherever a representation function is expected, together with the dataset
it was built for. Random draws are untouched (the cache consumes no randomness), so the
same seed gives the same sampled indices, and each index gets the code the sampling path
would have computed for it. That equality holds when a code does not depend on the other
images in the same forward batch; on the CPUs measured, convolution results agree bit for
bit across batch sizes >= 2 but a batch of exactly one image can differ in the last float
bit, so the cache never represents a lone image (it pads it with a copy of itself).

Not for stochastic representations (a sample per call): there each draw must get a fresh
sample, and ``evaluate`` keeps the sampling path (see :func:`cache_plan`).
"""

from __future__ import annotations

import time

import numpy as np

from factordiff.data.base import FactorDataset
from factordiff.metrics.utils import MetricInputError, Represent, check_codes

#: Largest cache ``evaluate`` builds on its own (codes are float64: n_images x n_codes x 8).
MAX_CACHE_BYTES = 2 * 1024**3


class CodeCache:
    """``represent`` of ``dataset``'s images, looked up by factors, each image encoded once.

    Calling the cache with images calls ``represent`` (uncached); the metrics look codes
    up with :meth:`codes` instead, via ``represent_factors``. ``encoded`` counts the
    distinct images represented, ``requested`` the codes handed out, ``seconds`` the
    time spent reading and representing images.
    """

    def __init__(self, represent: Represent, dataset: FactorDataset, chunk: int = 1024) -> None:
        if chunk < 2:
            raise MetricInputError("CodeCache chunk must be >= 2")
        self.represent = represent
        self.dataset = dataset
        self.chunk = chunk
        self.size = len(dataset)
        self.known = np.zeros(self.size, dtype=bool)
        self.table: np.ndarray | None = None  # (size, n_codes) float64, allocated lazily
        self.encoded = 0
        self.requested = 0
        self.seconds = 0.0  # spent reading and representing images

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.represent(images)

    def codes(self, factors: np.ndarray) -> np.ndarray:
        """Codes (n, n_codes) float64 of the images at ``factors`` (n, n_factors)."""
        return self.codes_at(self.dataset.factors_to_index(factors))

    def codes_at(self, indices: np.ndarray) -> np.ndarray:
        """Codes (n, n_codes) float64 of the images at dataset ``indices``."""
        indices = np.asarray(indices, dtype=np.int64)
        self.requested += len(indices)
        missing = np.unique(indices[~self.known[indices]])
        for start in range(0, len(missing), self.chunk):
            self._fill(missing[start : start + self.chunk])
        if self.table is None:  # nothing requested yet
            raise MetricInputError("CodeCache: no codes requested")
        return self.table[indices]

    def _fill(self, indices: np.ndarray) -> None:
        start = time.perf_counter()
        images = self.dataset.images_at(indices)
        lone = len(images) == 1
        if lone:  # a batch of one can round differently from any larger batch
            images = np.concatenate([images, images])
        codes = np.asarray(self.represent(images))
        if codes.ndim != 2 or codes.shape[0] != len(images):
            raise MetricInputError(
                f"the representation function must map {len(images)} images to a 2-D array "
                f"({len(images)}, n_codes); got shape {codes.shape}"
            )
        codes = check_codes(codes, "representation")
        if lone:
            codes = codes[:1]
        if self.table is None:
            self.table = np.zeros((self.size, codes.shape[1]), dtype=np.float64)
        elif codes.shape[1] != self.table.shape[1]:
            raise MetricInputError(
                f"the representation gave {codes.shape[1]} codes, earlier {self.table.shape[1]}"
            )
        self.table[indices] = codes
        self.known[indices] = True
        self.encoded += len(indices)
        self.seconds += time.perf_counter() - start

    def summary(self) -> dict:
        """What was cached, for ``eval.json``."""
        return {
            "dataset_images": self.size,
            "images_encoded": self.encoded,
            "codes_requested": self.requested,
            "encode_seconds": round(self.seconds, 3),
        }


def cache_plan(
    represent: Represent, dataset: FactorDataset, probe: np.ndarray, cache: str | bool = "auto"
) -> tuple[bool, str]:
    """Whether ``evaluate`` should draw from a ``CodeCache``, and the reason in words.

    ``cache``: ``"auto"`` (when the representation is deterministic on ``probe`` images
    and the table fits in ``MAX_CACHE_BYTES``), ``"on"``/``True`` (always; the caller
    vouches for a deterministic representation), ``"off"``/``False`` (never).
    """
    cache = {True: "on", False: "off"}.get(cache, cache)  # type: ignore[call-overload]
    if cache not in ("auto", "on", "off"):
        raise MetricInputError(f"cache must be 'auto', 'on' or 'off'; got {cache!r}")
    if cache == "off":
        return False, "disabled (cache='off'): every sampled image is represented"
    if cache == "on":
        return True, "enabled (cache='on'): each distinct image encoded once"
    first = np.asarray(represent(probe))
    n_codes = int(np.prod(first.shape[1:])) if first.ndim > 1 else 1
    size = len(dataset) * n_codes * 8
    if size > MAX_CACHE_BYTES:
        return False, (
            f"dataset too large to cache ({len(dataset)} images x {n_codes} codes = "
            f"{size / 1024**3:.1f} GiB > {MAX_CACHE_BYTES / 1024**3:.0f} GiB): every "
            "sampled image is represented"
        )
    declared = getattr(represent, "deterministic", None)
    same = (
        bool(declared)
        if declared is not None
        else bool(np.array_equal(first, np.asarray(represent(probe)), equal_nan=True))
    )
    if not same:
        return False, (
            "the representation is stochastic (two passes over the same images differ): "
            "every sampled image is represented afresh"
        )
    return True, "deterministic representation: each distinct image encoded once"

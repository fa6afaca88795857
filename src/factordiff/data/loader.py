"""The torch data path: a FactorDataset -> batched float tensors in [-1, 1].

Batches are fetched with one vectorised ``images_at`` call (``__getitems__``) rather than
image by image, which is what makes procedural rendering and h5 reads fast. Shuffling is
driven by a seeded ``torch.Generator``, so a run sees the same order every time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from factordiff.data.base import FactorDataset


def to_float(images: np.ndarray | torch.Tensor, image_size: int | None = None) -> torch.Tensor:
    """uint8 (B, H, W, C) -> float32 (B, C, H, W) in [-1, 1], optionally resized (antialiased)."""
    x = torch.as_tensor(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    if x.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {x.dtype}")
    x = x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    if image_size is not None and x.shape[-1] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True)
        x = x.clamp_(-1.0, 1.0)
    return x


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float (B, C, H, W) in [-1, 1] -> uint8 (B, H, W, C); the inverse of ``to_float``."""
    x = ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


class TorchFactorDataset(Dataset):
    """A ``FactorDataset`` (or a subset of its indices) as a map-style torch dataset.

    Items are dicts ``{"image": (C, H, W) float in [-1, 1], "factors": (n_factors,) long,
    "index": long}``; a batch of indices is fetched in one call.
    """

    def __init__(
        self,
        dataset: FactorDataset,
        indices: Sequence[int] | np.ndarray | None = None,
        image_size: int | None = None,
    ) -> None:
        self.dataset = dataset
        self.indices = None if indices is None else np.asarray(indices, dtype=np.int64)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.dataset) if self.indices is None else len(self.indices)

    def __getitems__(self, positions: list[int]) -> dict[str, torch.Tensor]:
        pos = np.asarray(positions, dtype=np.int64)
        index = pos if self.indices is None else self.indices[pos]
        return {
            "image": to_float(self.dataset.images_at(index), self.image_size),
            "factors": torch.from_numpy(self.dataset.index_to_factors(index)),
            "index": torch.from_numpy(index),
        }

    def __getitem__(self, position: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([position]).items()}


def _already_batched(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return batch


def make_loader(
    dataset: FactorDataset,
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = True,
    indices: Sequence[int] | np.ndarray | None = None,
    image_size: int | None = None,
) -> DataLoader:
    """A DataLoader over ``dataset`` with seeded shuffling and vectorised batch fetches."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        TorchFactorDataset(dataset, indices, image_size),
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=num_workers,
        drop_last=drop_last,
        collate_fn=_already_batched,
        persistent_workers=num_workers > 0,
    )

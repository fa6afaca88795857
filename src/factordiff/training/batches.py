"""Which images each step trains on, and how they reach the model.

Every batch is a function of ``(seed, step, chunk)``: the global batch of a step is cut
into ``processes x grad_accum`` chunks, chunk ``micro * processes + rank`` being this
process's. So a resumed run continues bitwise, and N processes compute what one process
computes with N-fold accumulation.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from factordiff.config import Config
from factordiff.data.base import FactorDataset
from factordiff.data.loader import TorchFactorDataset, to_float
from factordiff.errors import ConfigError
from factordiff.pipeline import ImageModel
from factordiff.training.run_guard import ignore_stop_signals


def chunk_seed(seed: int, step: int, chunk: int) -> int:
    return (seed * 1_000_003 + step) * 1_009 + chunk


class StepBatches:
    """Which dataset rows a (step, chunk) trains on: seeded epoch permutations, drop-last."""

    def __init__(self, n_items: int, batch_size: int, seed: int) -> None:
        if n_items < batch_size:
            raise ConfigError(
                f"train.batch_size {batch_size} exceeds the dataset's {n_items} images"
            )
        self.n, self.batch, self.seed = n_items, batch_size, seed
        self.per_epoch = n_items // batch_size
        self._epoch, self._perm = -1, np.empty(0, dtype=np.int64)

    def position(self, step: int) -> dict:
        return {"epoch": step // self.per_epoch, "batch_in_epoch": step % self.per_epoch}

    def rows(self, step: int, chunk: int, n_chunks: int) -> np.ndarray:
        epoch, k = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g).numpy()
        batch = self._perm[k * self.batch : (k + 1) * self.batch]
        size = self.batch // n_chunks
        return np.sort(batch[chunk * size : (chunk + 1) * size])


class RankBatchSampler(torch.utils.data.Sampler):
    """This process's rows for every (step, micro-batch) from ``start`` on, in training
    order, so a DataLoader with workers can prefetch them while the model computes."""

    def __init__(self, data: StepBatches, start: int, stop: int, rank: int, world: int, accum: int):
        self.data, self.start, self.stop = data, start, stop
        self.rank, self.world, self.accum = rank, world, accum

    def __len__(self) -> int:
        return (self.stop - self.start) * self.accum

    def __iter__(self):
        n_chunks = self.world * self.accum
        for step in range(self.start, self.stop):
            for micro in range(self.accum):
                yield self.data.rows(step, micro * self.world + self.rank, n_chunks).tolist()


def _as_fetched(batch: dict) -> dict:
    return batch  # TorchFactorDataset fetches a whole batch in one call


def batch_stream(
    dataset: FactorDataset, data: StepBatches, cfg: Config, start: int, rank: int, world: int
) -> DataLoader:
    """Float batches in [-1, 1] at the model's size; ``data.num_workers`` > 0 prefetches."""
    workers = cfg.data.num_workers
    return DataLoader(
        TorchFactorDataset(dataset, image_size=cfg.data.image_size),
        batch_sampler=RankBatchSampler(
            data, start, cfg.train.max_steps, rank, world, cfg.train.grad_accum
        ),
        num_workers=workers,
        collate_fn=_as_fetched,
        pin_memory=torch.cuda.is_available(),
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
        worker_init_fn=ignore_stop_signals if workers else None,
    )


def device_batch_stream(
    dataset: FactorDataset,
    data: StepBatches,
    cfg: Config,
    start: int,
    rank: int,
    world: int,
    device: torch.device,
) -> Iterator[dict]:
    """``data.on_device``: the whole dataset as uint8 on the training device, each chunk
    gathered and scaled there. Same batches as ``batch_stream``, without a loader or a
    host-to-device copy per step; for datasets that fit (Shapes3D: 5.9 GB)."""
    n = len(dataset)
    shape = dataset.images_at(np.arange(1)).shape[1:]
    need = n * int(np.prod(shape))
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if need > free // 2:
            raise ConfigError(
                f"data.on_device: the {n} images need {need / 2**30:.1f} GiB, more than half "
                f"of the {free / 2**30:.1f} GiB free on {device}; set data.on_device=false"
            )
    store = torch.empty((n, *shape), dtype=torch.uint8, device=device)
    for lo in tqdm(range(0, n, 4096), desc=f"images to {device}", leave=False, disable=n < 50_000):
        rows = np.arange(lo, min(n, lo + 4096))
        store[lo : lo + len(rows)] = torch.from_numpy(dataset.images_at(rows)).to(device)
    sampler = RankBatchSampler(data, start, cfg.train.max_steps, rank, world, cfg.train.grad_accum)
    for rows in sampler:
        index = torch.as_tensor(rows, device=device)
        yield {"image": to_float(store[index], cfg.data.image_size), "index": index}


@torch.no_grad()
def cache_latents(
    model: ImageModel, dataset: FactorDataset, cfg: Config, acc: Accelerator, progress: bool
) -> torch.Tensor:
    """``train.cache_latents``: every image's first-stage latent, computed once.

    The first stage is frozen in phase 2, so encoding each batch again (a fifth of a
    quick-start step on the CPU) recomputes the same latents; they are kept on the training
    device (Shapes3D's 480,000 at 16x16x3: 1.5 GB in fp32).
    """
    n = len(dataset)
    latents = torch.empty((n, *model.latent_shape), device=acc.device)
    model.first_stage.eval()
    for lo in tqdm(range(0, n, 256), desc="caching latents", disable=not progress, leave=False):
        rows = np.arange(lo, min(n, lo + 256))
        x = model.prepare_images(to_float(dataset.images_at(rows), cfg.data.image_size))
        with acc.autocast():  # as the per-step encode inside the training forward
            latents[lo : lo + len(rows)] = model.first_stage.encode(x).float()
    return latents


def caching_pays(n_images: int, images_to_see: int) -> bool:
    """Caching encodes all ``n_images`` once; encoding per batch encodes ``images_to_see``.
    On a dataset larger than the run's remaining images (Shapes3D's 480,000 against a
    CPU recipe's 224,000) the cache would cost more than it saves."""
    return images_to_see >= n_images

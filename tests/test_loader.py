"""The torch data path: shapes, value range, seeded shuffling, workers."""

from __future__ import annotations

import numpy as np
import torch

import factordiff as fd
from factordiff.data.loader import make_loader, to_float, to_uint8


def test_batches_are_float_in_range_with_matching_factors() -> None:
    ds = fd.data.load("quickstart")
    batch = next(iter(make_loader(ds, 16, seed=0)))
    assert batch["image"].shape == (16, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["image"].min() >= -1 and batch["image"].max() <= 1
    expected = to_float(ds.images(batch["factors"].numpy()))
    torch.testing.assert_close(batch["image"], expected)
    np.testing.assert_array_equal(ds.factors_to_index(batch["factors"].numpy()), batch["index"])


def test_seeded_shuffling_is_reproducible_and_differs_by_seed() -> None:
    ds = fd.data.load("quickstart")

    def order(seed: int, workers: int = 0) -> torch.Tensor:
        loader = make_loader(ds, 64, seed=seed, num_workers=workers)
        return torch.cat([b["index"] for b in loader])

    a = order(1)
    assert torch.equal(a, order(1))
    assert not torch.equal(a, order(2))
    assert torch.equal(a, order(1, workers=2))
    assert len(torch.unique(a)) == len(a) == (len(ds) // 64) * 64


def test_round_trip_and_resize() -> None:
    imgs = fd.data.load("dsprites").images(np.array([[2, 5, 3, 10, 20]]))
    np.testing.assert_array_equal(to_uint8(to_float(imgs)), imgs)
    assert to_float(imgs, image_size=32).shape == (1, 1, 32, 32)


def test_subset_indices() -> None:
    ds = fd.data.load("quickstart")
    loader = make_loader(ds, 4, shuffle=False, indices=[10, 20, 30, 40])
    assert next(iter(loader))["index"].tolist() == [10, 20, 30, 40]

"""Cars3D (data/cars/*.mat): factor and object order, cache, resize, errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from loader_checks import MB, Built, no_temp_files, traced
from PIL import Image

import published_files as pf
from factordiff.data.cars3d import Cars3D
from factordiff.errors import DatasetError


def test_cars3d_factor_order_and_object_order(cars3d: Built) -> None:
    ds = cars3d.dataset
    assert len(ds) == 17568 and ds.image_shape == (64, 64, 3)
    assert list(ds.object_names) == sorted(ds.object_names)
    assert ds.object_names[0] == "car_001_mesh" and len(ds.object_names) == 183
    factors = np.array([[0, 0, 0], [3, 23, 182], [2, 17, 100], [1, 5, 7]])
    factors = np.concatenate([factors, ds.sample_factors(60, 0)])
    images = ds.images(factors)
    assert images.dtype == np.uint8 and images.shape == (64, 64, 64, 3)
    for image, (elevation, azimuth, obj) in zip(images, factors, strict=True):
        want = pf.cars3d_colour(obj, azimuth, elevation)
        np.testing.assert_array_equal(image, np.broadcast_to(np.uint8(want), image.shape))
    idx = ds.factors_to_index(factors)
    np.testing.assert_array_equal(idx, [pf.c_index(f, (4, 24, 183)) for f in factors])
    np.testing.assert_array_equal(ds.images_at(idx), images)


def test_cars3d_cache_and_roots(cars3d: Built) -> None:
    ds = cars3d.dataset
    assert isinstance(ds._images, np.memmap)
    assert ds.cache_path.parent == cars3d.root / "data" / "cars"
    for root in (cars3d.root, cars3d.root / "data", cars3d.root / "data" / "cars"):
        cache_mtime = ds.cache_path.stat().st_mtime_ns
        again, peak = traced(lambda r=root: Cars3D(r))
        assert again.cache_path == ds.cache_path and peak < 16 * MB
        assert ds.cache_path.stat().st_mtime_ns == cache_mtime  # reused, not rebuilt
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone.images_at([5]), ds.images_at([5]))


def test_cars3d_resize_matches_disentanglement_lib_convention() -> None:
    from factordiff.data.cars3d import shrink

    image = np.random.RandomState(0).randint(0, 256, size=(128, 128, 3)).astype(np.uint8)
    ref = np.asarray(Image.fromarray(image).resize((64, 64), Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(shrink(image), ref)


def test_cars3d_wrong_file_count(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no .mat files"):
        Cars3D(tmp_path)
    with pytest.raises(DatasetError, match="not a folder"):
        Cars3D(tmp_path / "absent")
    pf.write_cars3d(tmp_path / "data" / "cars", n_objects=3)
    with pytest.raises(DatasetError, match="found 3 .mat files"):
        Cars3D(tmp_path)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing_im", "no variable 'im'"),
        ("shape", "expected uint8 (128, 128, 3, 24, 4)"),
        ("truncated", "truncated or corrupt"),
    ],
)
def test_cars3d_bad_files(tmp_path: Path, kind: str, message: str) -> None:
    folder = tmp_path / "cars"
    pf.write_bad_cars3d(folder, kind)
    with pytest.raises(DatasetError, match="car_001_mesh.mat") as err:
        Cars3D(tmp_path)
    assert message in str(err.value)
    assert not (folder / "cars3d_64x64.npy").exists() and no_temp_files(folder)

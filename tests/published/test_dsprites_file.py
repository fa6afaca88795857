"""dSprites (the dsprites_ndarray_*.npz file): keys, factor order, laziness, errors."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from loader_checks import MB, Built, no_temp_files, traced, truncated_copy

import published_files as pf
from factordiff.data.dsprites_file import DSpritesFile
from factordiff.data.npz import (
    read_cached_npy,
)
from factordiff.errors import DatasetError


def test_dsprites_images_at_known_factors(dsprites: Built) -> None:
    ds = dsprites.dataset
    for factors in pf.DSPRITES_MARKERS:
        index = pf.c_index(factors, ds.factor_sizes)
        image = ds.images(np.array([factors]))
        assert image.dtype == np.uint8 and image.shape == (1, 64, 64, 1)
        np.testing.assert_array_equal(image[0, :, :, 0], dsprites.markers[index] * 255)
    others = ds.images_at([1, 5000, len(ds) - 2])
    assert not others.any()


def test_dsprites_bijection_and_values(dsprites: Built) -> None:
    ds = dsprites.dataset
    assert len(ds) == 737280 and ds.image_shape == (64, 64, 1)
    idx = np.array(sorted(dsprites.markers) + [3, 99999])
    factors = ds.index_to_factors(idx)
    np.testing.assert_array_equal(ds.factors_to_index(factors), idx)
    np.testing.assert_array_equal(ds.images(factors), ds.images_at(idx))
    values = ds.factor_values
    np.testing.assert_allclose(values[0], [1, 2, 3])
    np.testing.assert_allclose(values[1], np.linspace(0.5, 1, 6))
    np.testing.assert_allclose(values[2], np.linspace(0, 2 * np.pi, 40))
    assert [len(v) for v in values] == list(ds.factor_sizes)


def test_dsprites_is_lazy_and_cached(dsprites: Built) -> None:
    ds = dsprites.dataset
    assert isinstance(ds._packed, np.memmap)
    assert ds.cache_path.stat().st_size < 400 * MB  # 512 bytes per image, not 4096
    assert dsprites.build_peak < 256 * MB, dsprites.build_peak / MB  # never 3 GB
    stamp = json.loads(ds.cache_path.with_name(ds.cache_path.name + ".json").read_text())
    assert stamp["version"] >= 1 and stamp["source"]["name"] == pf.DSPRITES_FILE
    cache_mtime = ds.cache_path.stat().st_mtime_ns
    reopened, peak = traced(lambda: DSpritesFile(dsprites.root / pf.DSPRITES_FILE))
    assert peak < 16 * MB and ds.cache_path.stat().st_mtime_ns == cache_mtime  # reused
    np.testing.assert_array_equal(reopened.images_at([0]), ds.images_at([0]))
    # A changed source makes the stamp stale.
    stale = dict(ds._expected_stamp(), source={"name": pf.DSPRITES_FILE, "size": 1})
    assert read_cached_npy(ds.cache_path, stale, np.uint8, (737280, 512)) is None


def test_dsprites_pickles_without_the_memmap(dsprites: Built) -> None:
    blob = pickle.dumps(dsprites.dataset)
    assert len(blob) < 64 * 1024
    clone = pickle.loads(blob)
    np.testing.assert_array_equal(clone.images_at([0, 1]), dsprites.dataset.images_at([0, 1]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"omit": ("imgs",)}, "no array 'imgs'"),
        ({"omit": ("latents_classes",), "imgs_rows": 0}, "no array 'latents_classes'"),
        ({"imgs_dtype": "float32", "imgs_count": 4}, "dtype float32, expected uint8"),
        ({"imgs_count": 10}, "shape (10, 64, 64), expected (737280, 64, 64)"),
        ({"swap_class_rows": True, "imgs_rows": 0}, "not the C-order grid"),
        ({"imgs_rows": 0}, "truncated"),
        ({"imgs_value": 2, "imgs_rows": 8192}, "must be binary"),
    ],
)
def test_dsprites_bad_files(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    pf.write_dsprites(tmp_path / pf.DSPRITES_FILE, **kwargs)
    with pytest.raises(DatasetError, match=pf.DSPRITES_FILE) as err:
        DSpritesFile(tmp_path)
    assert message in str(err.value)
    assert not list(tmp_path.glob("*.npy")) and no_temp_files(tmp_path)


def test_dsprites_missing_truncated_and_corrupt(tmp_path: Path, dsprites: Built) -> None:
    with pytest.raises(DatasetError, match=pf.DSPRITES_FILE):
        DSpritesFile(tmp_path)
    source = dsprites.root / pf.DSPRITES_FILE
    short = truncated_copy(source, tmp_path / "short" / pf.DSPRITES_FILE)
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        DSpritesFile(short.parent)
    # Damage the compressed image stream: caught while streaming, no cache left behind.
    broken = tmp_path / "broken" / pf.DSPRITES_FILE
    broken.parent.mkdir()
    data = bytearray(source.read_bytes())
    data[200_000:200_064] = bytes(64 * [0xA5])
    broken.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=pf.DSPRITES_FILE):
        DSpritesFile(broken.parent)
    assert not list(broken.parent.glob("*.npy")) and no_temp_files(broken.parent)

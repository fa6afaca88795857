"""Procedural datasets: determinism, the published factor values, each factor visible."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest

import factordiff as fd
from factordiff.data.dsprites import DSprites
from factordiff.data.quickstart import Quickstart


@pytest.mark.parametrize("name", ["quickstart", "dsprites", "shapes3d"])
def test_deterministic_uint8_images(name: str) -> None:
    ds = fd.data.load(name)
    factors = ds.sample_factors(8, 0)
    a = ds.images(factors)
    b = fd.data.load(name).images(factors)
    assert a.dtype == np.uint8 and a.shape == (8, *ds.image_shape)
    np.testing.assert_array_equal(a, b)
    # One image rendered alone equals the same image rendered in a batch.
    np.testing.assert_array_equal(ds.images(factors[3:4])[0], a[3])


@pytest.mark.parametrize("name", ["quickstart", "dsprites", "shapes3d"])
def test_every_factor_changes_the_image(name: str) -> None:
    ds = fd.data.load(name)
    base = ds.sample_factors(1, 1)[0]
    for i, size in enumerate(ds.factor_sizes):
        other = base.copy()
        other[i] = (base[i] + max(1, size // 3)) % size
        if name == "dsprites" and i == 2:  # orientation: squares repeat every quarter turn
            base_i, other_i = base.copy(), other.copy()
            base_i[0] = other_i[0] = 2  # heart has no rotational symmetry
            pair = ds.images(np.stack([base_i, other_i]))
        else:
            pair = ds.images(np.stack([base, other]))
        assert not np.array_equal(pair[0], pair[1]), ds.factor_names[i]


def test_dsprites_published_values_and_binary_images() -> None:
    ds = DSprites()
    values = ds.factor_values
    np.testing.assert_allclose(values[1], np.linspace(0.5, 1, 6))
    np.testing.assert_allclose(values[2][[0, -1]], [0, 2 * np.pi])
    imgs = ds.images(ds.sample_factors(64, 0))
    assert set(np.unique(imgs)) <= {0, 255}
    # Orientation 0 and 2pi are both classes in the published file and look identical.
    f = np.array([[2, 3, 0, 10, 10], [2, 3, 39, 10, 10]])
    a, b = ds.images(f)
    np.testing.assert_array_equal(a, b)


def test_dsprites_position_and_scale_geometry() -> None:
    ds = DSprites()
    left, right = ds.images(np.array([[0, 5, 0, 0, 16], [0, 5, 0, 31, 16]]))[..., 0]
    assert np.argwhere(left)[:, 1].mean() < 20 < 44 < np.argwhere(right)[:, 1].mean()
    top, bottom = ds.images(np.array([[0, 5, 0, 16, 0], [0, 5, 0, 16, 31]]))[..., 0]
    assert np.argwhere(top)[:, 0].mean() < np.argwhere(bottom)[:, 0].mean()
    small, big = ds.images(np.array([[1, 0, 0, 16, 16], [1, 5, 0, 16, 16]]))
    assert 0 < (small > 0).sum() < (big > 0).sum()


def test_quickstart_colours_and_size() -> None:
    ds = Quickstart()
    assert len(ds) == 2592 and ds.image_shape == (32, 32, 3)
    imgs = ds.images(np.array([[1, 3, h, 2, 2] for h in range(6)]))
    hues = []
    for img in imgs:
        centre = img[13, 13].astype(float) / 255  # inside the biggest circle at (2, 2)
        hues.append(colorsys.rgb_to_hsv(*centre)[0])
    np.testing.assert_allclose(hues, np.arange(6) / 6, atol=0.03)
    assert Quickstart(image_size=64).images(np.zeros((1, 5), int)).shape == (1, 64, 64, 3)
    with pytest.raises(ValueError, match="image_size"):
        Quickstart(image_size=8)


def test_cache_round_trip_with_version_stamp(tmp_path) -> None:
    ds = Quickstart(cache_dir=tmp_path)
    idx = np.array([5, 0, 2591, 77])
    np.testing.assert_array_equal(ds.images_at(idx), Quickstart().images_at(idx))
    files = list(tmp_path.glob("*.npy"))
    assert len(files) == 1 and files[0].name.startswith(f"quickstart-v{ds.render_version}-")
    # Another resolution gets another cache file, never the wrong pixels.
    Quickstart(image_size=48, cache_dir=tmp_path).images_at([0])
    assert len(list(tmp_path.glob("*.npy"))) == 2

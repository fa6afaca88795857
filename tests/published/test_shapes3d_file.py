"""Shapes3D (3dshapes.h5): keys, factor order, batches, laziness, errors."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from loader_checks import MB, Built, traced, truncated_copy

import published_files as pf
from factordiff.data.shapes3d_file import Shapes3DFile
from factordiff.errors import DatasetError


def test_shapes3d_images_at_known_factors(shapes3d: Built) -> None:
    ds = shapes3d.dataset
    assert (shapes3d.root / "3dshapes.h5").stat().st_size < 5 * MB
    assert len(ds) == 480000 and ds.image_shape == (64, 64, 3)
    for factors in pf.SHAPES3D_MARKERS:
        index = pf.c_index(factors, ds.factor_sizes)
        image = ds.images(np.array([factors]))
        assert image.dtype == np.uint8 and image.shape == (1, 64, 64, 3)
        np.testing.assert_array_equal(image[0], shapes3d.markers[index])
    assert not ds.images_at([1, 240000]).any()


def test_shapes3d_batches_keep_order_and_duplicates(shapes3d: Built) -> None:
    ds = shapes3d.dataset
    marked = sorted(shapes3d.markers)
    # Far apart (point selection) and close together (block read), unsorted, repeated.
    for idx in ([marked[2], 7, marked[0], marked[2], 479999], [marked[0] + 1, marked[0]]):
        batch = ds.images_at(idx)
        for row, i in enumerate(idx):
            want = shapes3d.markers.get(i, np.zeros((64, 64, 3), np.uint8))
            np.testing.assert_array_equal(batch[row], want)
    factors = ds.sample_factors(64, np.random.RandomState(0))
    np.testing.assert_array_equal(ds.index_to_factors(ds.factors_to_index(factors)), factors)


def test_shapes3d_values_and_laziness(shapes3d: Built) -> None:
    ds = shapes3d.dataset
    values = ds.factor_values
    np.testing.assert_allclose(values[0], np.arange(10) / 10)
    np.testing.assert_allclose(values[3], np.linspace(0.75, 1.25, 8))
    np.testing.assert_allclose(values[5], np.linspace(-30, 30, 15))
    assert ds._memory is None and shapes3d.build_peak < 16 * MB
    idx = np.random.RandomState(1).randint(len(ds), size=64)
    _, peak = traced(lambda: ds.images_at(idx))
    assert peak < 16 * MB
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone.images_at(idx[:4]), ds.images_at(idx[:4]))


def test_shapes3d_in_memory(tmp_path: Path) -> None:
    class Tiny(Shapes3DFile):
        factor_sizes = (2, 2, 2, 2, 2, 3)

    written = pf.write_shapes3d(
        tmp_path / "3dshapes.h5", factor_sizes=Tiny.factor_sizes, fill_all=True
    )
    lazy, eager = Tiny(tmp_path), Tiny(tmp_path, in_memory=True)
    assert eager._memory is not None and eager._memory.shape == (96, 64, 64, 3)
    idx = np.array([95, 0, 17, 17])
    np.testing.assert_array_equal(eager.images_at(idx), lazy.images_at(idx))
    np.testing.assert_array_equal(eager.images_at([17])[0], written[17])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"omit": ("images",)}, "no dataset 'images'"),
        ({"omit": ("labels",)}, "no dataset 'labels'"),
        ({"images_dtype": "float32"}, "dtype float32, expected uint8"),
        ({"labels_dtype": "float32"}, "dtype float32, expected float64"),
        ({"images_count": 10}, "shape (10, 64, 64, 3), expected (480000, 64, 64, 3)"),
        ({"shuffle_labels": True}, "not the published 3dshapes.h5"),
    ],
)
def test_shapes3d_bad_files(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    pf.write_shapes3d(tmp_path / "3dshapes.h5", **kwargs)
    with pytest.raises(DatasetError, match="3dshapes.h5") as err:
        Shapes3DFile(tmp_path)
    assert message in str(err.value)


def test_shapes3d_missing_truncated_not_hdf5(tmp_path: Path, shapes3d: Built) -> None:
    with pytest.raises(DatasetError, match="3dshapes.h5"):
        Shapes3DFile(tmp_path)
    short = truncated_copy(shapes3d.root / "3dshapes.h5", tmp_path / "a" / "3dshapes.h5")
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        Shapes3DFile(short)
    text = tmp_path / "b" / "3dshapes.h5"
    text.parent.mkdir()
    text.write_text("not hdf5")
    with pytest.raises(DatasetError, match="cannot open as HDF5"):
        Shapes3DFile(text.parent)

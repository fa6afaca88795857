"""MPI3D (mpi3d_*.npz): the three variants, memory mapping, errors."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from loader_checks import MB, Built

import published_files as pf
from factordiff.data.mpi3d import MPI3DReal, MPI3DRealistic, MPI3DToy
from factordiff.data.npz import (
    inspect_npz_member,
)
from factordiff.errors import DatasetError


def test_mpi3d_sparse_file_is_a_valid_zip(mpi3d: Built) -> None:
    path = mpi3d.root / "mpi3d_toy.npz"
    with zipfile.ZipFile(path) as zf:
        (info,) = zf.infolist()
        assert info.filename == "images.npy" and info.compress_type == zipfile.ZIP_STORED
    member = inspect_npz_member(path, "images")
    assert member.shape == (1036800, 64, 64, 3) and not member.compressed


def test_mpi3d_images_at_known_factors(mpi3d: Built) -> None:
    ds = mpi3d.dataset
    assert len(ds) == 1036800 and ds.factor_sizes == (6, 6, 2, 3, 3, 40, 40)
    for factors in pf.MPI3D_MARKERS:
        index = pf.c_index(factors, ds.factor_sizes)
        image = ds.images(np.array([factors]))
        assert image.dtype == np.uint8 and image.shape == (1, 64, 64, 3)
        np.testing.assert_array_equal(image[0], mpi3d.markers[index])
    assert not ds.images_at([1, 500000, 1036798]).any()
    idx = np.array(sorted(mpi3d.markers))
    np.testing.assert_array_equal(ds.factors_to_index(ds.index_to_factors(idx)), idx)


def test_mpi3d_is_memory_mapped(mpi3d: Built) -> None:
    ds = mpi3d.dataset
    assert isinstance(ds._images, np.memmap)
    assert mpi3d.build_peak < 16 * MB
    assert len(pickle.dumps(ds)) < 64 * 1024
    assert not list(mpi3d.root.glob("*.npy"))  # stored member: no cache


@pytest.mark.parametrize(
    ("cls", "filename"),
    [(MPI3DReal, "mpi3d_real.npz"), (MPI3DRealistic, "mpi3d_realistic.npz")],
)
def test_mpi3d_variants(tmp_path: Path, cls: type, filename: str) -> None:
    markers = pf.write_mpi3d(tmp_path / filename)
    ds = cls(tmp_path / filename)  # the file itself as root
    index = sorted(markers)[-1]
    np.testing.assert_array_equal(ds.images_at([index])[0], markers[index])
    with pytest.raises(DatasetError, match=filename):
        cls(tmp_path / "elsewhere")


def test_mpi3d_grid_shaped_array(tmp_path: Path) -> None:
    shape = (*pf.MPI3D_SIZES, 64, 64, 3)
    pf.write_sparse_npz(tmp_path / "mpi3d_toy.npz", "images", "uint8", shape, {})
    ds = MPI3DToy(tmp_path)
    assert ds.images_at([0, 1036799]).shape == (2, 64, 64, 3)


@pytest.mark.parametrize(
    ("count", "dtype", "message"),
    [
        (10, "float32", "dtype float32, expected uint8"),
        (10, "uint8", "expected (1036800, 64, 64, 3)"),
        (460800, "uint8", "early 4-colour/4-shape release"),
    ],
)
def test_mpi3d_bad_files(tmp_path: Path, count: int, dtype: str, message: str) -> None:
    pf.write_mpi3d(tmp_path / "mpi3d_toy.npz", count=count, dtype=dtype)
    with pytest.raises(DatasetError, match="mpi3d_toy.npz") as err:
        MPI3DToy(tmp_path)
    assert message in str(err.value)


def test_mpi3d_missing_key_and_truncated(tmp_path: Path) -> None:
    np.savez(tmp_path / "mpi3d_toy.npz", imgs=np.zeros((2, 64, 64, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"no array 'images'.*\['imgs'\]"):
        MPI3DToy(tmp_path)
    # Cutting a sparse file costs nothing; the zip directory at its end is lost.
    short = tmp_path / "short" / "mpi3d_toy.npz"
    short.parent.mkdir()
    pf.write_mpi3d(short)  # sparse: writing and cutting it cost nothing
    os.truncate(short, short.stat().st_size // 2)
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        MPI3DToy(short.parent)

"""Loaders of the published dataset files, run on stand-ins in the exact published layout.

The expensive files (full-count dSprites, Shapes3D, MPI3D, Cars3D) are written once per
session; see ``published_files.py`` for how they stay small and fast. Each loader is
checked for keys, dtypes, shapes and factor order (the image at known factors is the
marker written there), the index/factor bijection, lazy reading, and its error paths:
every user-caused problem must be one ``DatasetError`` naming the file, never a raw
h5py/zipfile/scipy traceback.
"""

from __future__ import annotations

import json
import os
import pickle
import tracemalloc
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
from PIL import Image

import published_files as pf
from factordiff.data.cars3d import Cars3D
from factordiff.data.celeba import CelebA
from factordiff.data.dsprites_file import DSpritesFile
from factordiff.data.imagefolder import ImageFolder
from factordiff.data.mpi3d import MPI3DReal, MPI3DRealistic, MPI3DToy
from factordiff.data.npz import (
    inspect_npz_member,
    memmap_npz_member,
    read_cached_npy,
    read_npz_member,
)
from factordiff.data.registry import DATASETS, load
from factordiff.data.shapes3d_file import Shapes3DFile
from factordiff.errors import DatasetError

MB = 1 << 20


@dataclass
class Built:
    """A dataset built from a written file, with what the build cost."""

    root: Path
    dataset: Any
    markers: dict[int, np.ndarray]
    build_peak: int


def _traced(build: Callable[[], Any]) -> tuple[Any, int]:
    """The built object and the peak Python memory of building it (no wall-clock time:
    timings live in benchmarks/published_loaders.py, never in tests)."""
    tracemalloc.start()
    try:
        result = build()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


def _refuse_pickle(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("a loader unpickled data from the file")


def _truncated_copy(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


# --- session fixtures: the expensive files -----------------------------------------------
@pytest.fixture(scope="session")
def dsprites(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("dsprites")
    markers = pf.write_dsprites(root / pf.DSPRITES_FILE)
    # The cache build must never unpickle ``metadata``: make any unpickling fail.
    with mock.patch("pickle.load", _refuse_pickle), mock.patch("pickle.loads", _refuse_pickle):
        ds, peak = _traced(lambda: DSpritesFile(root))
    return Built(root, ds, markers, peak)


@pytest.fixture(scope="session")
def shapes3d(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("shapes3d")
    markers = pf.write_shapes3d(root / "3dshapes.h5")
    ds, peak = _traced(lambda: Shapes3DFile(root))
    return Built(root, ds, markers, peak)


@pytest.fixture(scope="session")
def mpi3d(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("mpi3d")
    markers = pf.write_mpi3d(root / "mpi3d_toy.npz")
    ds, peak = _traced(lambda: MPI3DToy(root))
    return Built(root, ds, markers, peak)


@pytest.fixture(scope="session")
def cars3d(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("cars3d")
    pf.write_cars3d(root / "data" / "cars")
    ds, peak = _traced(lambda: Cars3D(root))
    return Built(root, ds, {}, peak)


@pytest.fixture(scope="session")
def celeba_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    root = tmp_path_factory.mktemp("celeba")
    return root, pf.write_celeba(root)


# --- registry agreement -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "cls"),
    [
        ("dsprites", DSpritesFile),
        ("shapes3d", Shapes3DFile),
        ("mpi3d_toy", MPI3DToy),
        ("mpi3d_real", MPI3DReal),
        ("cars3d", Cars3D),
    ],
)
def test_class_attributes_match_registry(key: str, cls: type) -> None:
    spec = DATASETS[key]
    assert cls.name == spec.name
    assert cls.factor_names == spec.factor_names
    assert cls.factor_sizes == spec.factor_sizes


def test_registry_loads_the_file_loaders(
    dsprites: Built,
    shapes3d: Built,
    mpi3d: Built,
    cars3d: Built,
    celeba_root: tuple[Path, np.ndarray],
) -> None:
    assert isinstance(load("dsprites", root=dsprites.root), DSpritesFile)
    assert isinstance(load("shapes3d", root=shapes3d.root), Shapes3DFile)
    assert isinstance(load("mpi3d_toy", root=mpi3d.root), MPI3DToy)
    assert isinstance(load("cars3d", root=cars3d.root), Cars3D)
    celeba = load("celeba", root=celeba_root[0], split="test")
    assert isinstance(celeba, CelebA) and len(celeba) == 2


# --- dSprites -----------------------------------------------------------------------------
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
    reopened, peak = _traced(lambda: DSpritesFile(dsprites.root / pf.DSPRITES_FILE))
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
    assert not list(tmp_path.glob("*.npy")) and _no_temp_files(tmp_path)


def test_dsprites_missing_truncated_and_corrupt(tmp_path: Path, dsprites: Built) -> None:
    with pytest.raises(DatasetError, match=pf.DSPRITES_FILE):
        DSpritesFile(tmp_path)
    source = dsprites.root / pf.DSPRITES_FILE
    short = _truncated_copy(source, tmp_path / "short" / pf.DSPRITES_FILE)
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
    assert not list(broken.parent.glob("*.npy")) and _no_temp_files(broken.parent)


# --- Shapes3D -----------------------------------------------------------------------------
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
    _, peak = _traced(lambda: ds.images_at(idx))
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
    short = _truncated_copy(shapes3d.root / "3dshapes.h5", tmp_path / "a" / "3dshapes.h5")
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        Shapes3DFile(short)
    text = tmp_path / "b" / "3dshapes.h5"
    text.parent.mkdir()
    text.write_text("not hdf5")
    with pytest.raises(DatasetError, match="cannot open as HDF5"):
        Shapes3DFile(text.parent)


# --- MPI3D --------------------------------------------------------------------------------
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


# --- npz.py directly: stored and compressed members --------------------------------------
def test_npz_stored_member_is_mapped_in_place(tmp_path: Path) -> None:
    x = np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4)
    f = np.asfortranarray(x.astype(np.float32))
    np.savez(tmp_path / "s.npz", x=x, f=f)
    mm = memmap_npz_member(tmp_path / "s.npz", "x", dtype=np.int16, shape=(None, 5, 4))
    assert isinstance(mm, np.memmap)
    np.testing.assert_array_equal(mm, x)
    np.testing.assert_array_equal(memmap_npz_member(tmp_path / "s.npz", "f"), f)
    np.testing.assert_array_equal(read_npz_member(tmp_path / "s.npz", "f"), f)
    assert not list(tmp_path.glob("*.npy"))


def test_npz_compressed_member_is_cached_once(tmp_path: Path) -> None:
    src, cache = tmp_path / "c.npz", tmp_path / "cache"
    x = np.random.RandomState(0).randint(0, 255, size=(50, 8, 8, 3)).astype(np.uint8)
    f = np.asfortranarray(x[:, :, :, 0].astype(np.float64))
    np.savez_compressed(src, images=x, f=f)
    mm = memmap_npz_member(src, "images", dtype=np.uint8, shape=(None, 8, 8, 3), cache_dir=cache)
    assert isinstance(mm, np.memmap)
    np.testing.assert_array_equal(mm, x)
    np.testing.assert_array_equal(memmap_npz_member(src, "f", cache_dir=cache), f)
    cached = cache / "c.images.npy"
    first = cached.stat().st_mtime_ns
    np.testing.assert_array_equal(memmap_npz_member(src, "images", cache_dir=cache), x)
    assert cached.stat().st_mtime_ns == first  # reused, not rewritten
    # A new source (other size and time) invalidates the cache.
    y = x[:40] // 2
    np.savez_compressed(src, images=y)
    os.utime(src, ns=(first + 10**9, first + 10**9))
    np.testing.assert_array_equal(memmap_npz_member(src, "images", cache_dir=cache), y)
    assert _no_temp_files(cache)


def test_npz_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.npz"
    np.savez_compressed(good, a=np.zeros((100, 10), np.float32))
    with pytest.raises(DatasetError, match=r"no array 'b' .*\['a'\]"):
        memmap_npz_member(good, "b")
    with pytest.raises(DatasetError, match="dtype float32, expected uint8"):
        memmap_npz_member(good, "a", dtype=np.uint8)
    with pytest.raises(DatasetError, match=r"shape \(100, 10\), expected \(N, 11\)"):
        memmap_npz_member(good, "a", shape=(None, 11))
    with pytest.raises(DatasetError, match="file not found"):
        memmap_npz_member(tmp_path / "absent.npz", "a")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(DatasetError, match="not a readable .npz"):
        memmap_npz_member(tmp_path / "text.npz", "a")
    for name, saver in (("stored", np.savez), ("packed", np.savez_compressed)):
        path = tmp_path / f"{name}.npz"
        saver(path, a=np.random.RandomState(0).rand(1000, 100))
        short = _truncated_copy(path, tmp_path / f"short_{name}.npz", 0.7)
        with pytest.raises(DatasetError, match="truncated or corrupt"):
            memmap_npz_member(short, "a", cache_dir=tmp_path / "cache")
    # Compressed data damaged in the middle: the stream (or its CRC) fails, no cache left.
    data = bytearray((tmp_path / "packed.npz").read_bytes())
    data[len(data) // 2 : len(data) // 2 + 32] = bytes(32)
    (tmp_path / "damaged.npz").write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="damaged.npz"):
        memmap_npz_member(tmp_path / "damaged.npz", "a", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "damaged.a.npy").exists()
    assert _no_temp_files(tmp_path / "cache")


def test_npz_refuses_pickled_members(tmp_path: Path) -> None:
    np.savez(tmp_path / "p.npz", meta=np.array({"a": 1}, dtype=object))
    with (
        mock.patch("pickle.load", _refuse_pickle),
        pytest.raises(DatasetError, match="pickle"),
    ):
        memmap_npz_member(tmp_path / "p.npz", "meta")


# --- Cars3D -------------------------------------------------------------------------------
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
        again, peak = _traced(lambda r=root: Cars3D(r))
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
    assert not (folder / "cars3d_64x64.npy").exists() and _no_temp_files(folder)


# --- CelebA -------------------------------------------------------------------------------
def _decoded(root: Path, i: int) -> Image.Image:
    with Image.open(root / "img_align_celeba" / f"{i + 1:06d}.jpg") as img:
        return img.convert("RGB")


def test_celeba_attributes_and_crop148(celeba_root: tuple[Path, np.ndarray]) -> None:
    root, attributes = celeba_root
    ds = CelebA(root)
    assert not ds.has_ground_truth and ds.factor_names == ("index",)
    assert len(ds) == 10 and ds.factor_sizes == (10,)
    assert ds.attributes.dtype == np.int8 and ds.attributes.shape == (10, 40)
    np.testing.assert_array_equal(ds.attributes, attributes)
    assert ds.attribute_names[:2] == ("5_o_Clock_Shadow", "Arched_Eyebrows")
    np.testing.assert_array_equal(ds.partition, [0, 0, 0, 0, 0, 0, 1, 1, 2, 2])
    images = ds.images_at([3, 0])
    assert images.dtype == np.uint8 and images.shape == (2, 64, 64, 3)
    box = (15, 35, 163, 183)  # 148x148 centre of 178x218
    ref = _decoded(root, 3).crop(box).resize((64, 64), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(images[0], np.asarray(ref))
    centre = np.array(pf.celeba_colours(3)[0])
    assert np.abs(images[0].reshape(-1, 3).mean(0) - centre).max() < 6  # no green border


def test_celeba_resize96crop64_and_splits(celeba_root: tuple[Path, np.ndarray]) -> None:
    root, attributes = celeba_root
    ds = CelebA(root, preprocess="resize96crop64", split="test")
    assert len(ds) == 2 and ds.filenames == ("000009.jpg", "000010.jpg")
    np.testing.assert_array_equal(ds.attributes, attributes[8:])
    ref = _decoded(root, 8).resize((96, 117), Image.Resampling.BILINEAR).crop((16, 26, 80, 90))
    np.testing.assert_array_equal(ds.images_at([0])[0], np.asarray(ref))
    assert len(CelebA(root, split="train")) == 6 and len(CelebA(root, split="valid")) == 2
    assert CelebA(root, image_size=32).images_at([0]).shape == (1, 32, 32, 3)


def test_celeba_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="list_attr_celeba.txt"):
        CelebA(tmp_path)
    pf.write_celeba(tmp_path, n=4, partition=False)
    with pytest.raises(DatasetError, match="preprocess"):
        CelebA(tmp_path, preprocess="crop")  # type: ignore[arg-type]
    with pytest.raises(DatasetError, match="list_eval_partition.txt"):
        CelebA(tmp_path, split="train")
    attr = tmp_path / "list_attr_celeba.txt"
    good = attr.read_text()
    lines = good.splitlines()
    for bad_lines, message in (
        (lines[:4] + [lines[4].rsplit(" ", 1)[0]] + lines[5:], "line 5: expected a file name"),
        (lines[:3] + [lines[3].replace("-1", "0", 1)] + lines[4:], "line 4: value '0'"),
        (lines[:-1], "line 1 says 4 images but 3"),
        (["four"] + lines[1:], "line 1: expected the number"),
    ):
        attr.write_text("\n".join(bad_lines) + "\n")
        with pytest.raises(DatasetError, match="list_attr_celeba.txt") as err:
            CelebA(tmp_path)
        assert message in str(err.value)
    attr.write_text(good)
    (tmp_path / "img_align_celeba" / "000002.jpg").unlink()
    with pytest.raises(DatasetError, match=r"missing .*000002.jpg"):
        CelebA(tmp_path)
    (tmp_path / "img_align_celeba" / "000002.jpg").write_bytes(b"not a jpeg")
    ds = CelebA(tmp_path)
    with pytest.raises(DatasetError, match="000002.jpg"):
        ds.images_at([1])


# --- ImageFolder --------------------------------------------------------------------------
def _png(path: Path, pixels: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(pixels)
    (img.convert(mode) if mode else img).save(path)


def _colour(i: int) -> np.ndarray:
    return np.full((8, 6, 3), (10 * i, 255 - 10 * i, 7), dtype=np.uint8)


def test_imagefolder_without_csv(tmp_path: Path) -> None:
    _png(tmp_path / "b" / "x.png", _colour(2))
    _png(tmp_path / "a.png", _colour(1))
    _png(tmp_path / "c" / "gray.png", np.full((8, 6), 99, np.uint8))
    rgba = np.dstack([_colour(3), np.zeros((8, 6), np.uint8)])
    _png(tmp_path / "d.PNG", rgba)
    (tmp_path / "notes.txt").write_text("ignored")
    ds = ImageFolder(tmp_path)
    assert not ds.has_ground_truth and ds.factor_names == ("index",)
    assert [p.relative_to(tmp_path).as_posix() for p in ds.files] == [
        "a.png",
        "b/x.png",
        "c/gray.png",
        "d.PNG",
    ]
    images = ds.images_at([0, 1, 2, 3])
    assert images.shape == (4, 8, 6, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[0], _colour(1))
    np.testing.assert_array_equal(images[2], np.full((8, 6, 3), 99))
    np.testing.assert_array_equal(images[3], _colour(3))  # alpha dropped, not composited


def test_imagefolder_full_grid_csv(tmp_path: Path) -> None:
    rows = []
    combos = [(a, b) for a in (20, 10) for b in (5, -1, 0)]  # not in sorted order
    for k, (a, b) in enumerate(combos):
        _png(tmp_path / f"img{k}.png", _colour(k))
        rows.append(f"img{k}.png,{a},{b}")
    (tmp_path / "factors.csv").write_text("file,size,pos\n" + "\n".join(rows) + "\n")
    ds = ImageFolder(tmp_path)
    assert ds.is_grid and ds.has_ground_truth
    assert ds.factor_names == ("size", "pos") and ds.factor_sizes == (2, 3)
    assert [v.tolist() for v in ds.factor_values] == [[10, 20], [-1, 0, 5]]
    # Class (1, 2) = size 20, pos 5 = img0; index 5 in C order.
    np.testing.assert_array_equal(ds.images(np.array([[1, 2]]))[0], _colour(0))
    np.testing.assert_array_equal(ds.images_at([0])[0], _colour(combos.index((10, -1))))
    np.testing.assert_array_equal(ds.factors_to_index(np.array([[1, 2]])), [5])


def test_imagefolder_partial_grid_csv(tmp_path: Path) -> None:
    combos = [(0, 0), (0, 1), (1, 1), (2, 0)]
    for k in range(len(combos)):
        _png(tmp_path / "img" / f"{k}.png", _colour(k))
    text = "file,a,b\n" + "".join(f"img/{k}.png,{a},{b}\n" for k, (a, b) in enumerate(combos))
    (tmp_path / "factors.csv").write_text(text)
    ds = ImageFolder(tmp_path)
    assert not ds.is_grid and len(ds) == 4 and ds.factor_sizes == (3, 2)
    np.testing.assert_array_equal(
        ds.images(np.array([[1, 1], [0, 0]]))[:, 0, 0], [_colour(2)[0, 0], _colour(0)[0, 0]]
    )
    np.testing.assert_array_equal(ds.index_to_factors([3, 1]), [[2, 0], [0, 1]])
    np.testing.assert_array_equal(ds.factors_to_index(np.array(combos)), [0, 1, 2, 3])
    with pytest.raises(DatasetError, match=r"no image .* \(a=1, b=0\)"):
        ds.images(np.array([[1, 0]]))
    sampled = ds.sample_factors(200, np.random.RandomState(0))
    assert {tuple(f) for f in sampled.tolist()} == set(combos)


def test_imagefolder_sizes(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", _colour(1))
    _png(tmp_path / "b.jpg", np.zeros((10, 10, 3), np.uint8))
    ds = ImageFolder(tmp_path)
    with pytest.raises(DatasetError, match=r"b.jpg: image is 10x10, expected 6x8 .*image_size"):
        ds.images_at([1])
    resized = ImageFolder(tmp_path, image_size=4)
    assert resized.images_at([0, 1]).shape == (2, 4, 4, 3)
    assert ImageFolder(tmp_path, image_size=(5, 7)).images_at([1]).shape == (1, 5, 7, 3)
    (tmp_path / "c.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="c.png: not a readable image"):
        ImageFolder(tmp_path).images_at([2])


@pytest.mark.parametrize(
    ("csv", "message"),
    [
        ("name,a\na.png,1\n", "no `file` column"),
        ("file,a\na.png,1.5\n", "line 2, column 'a': '1.5' is not an integer"),
        ("file,a,b\na.png,1,2\nb.png,x,2\n", "line 3, column 'a': 'x' is not an integer"),
        ("file,a\nmissing.png,1\n", "line 2: listed file missing.png not found"),
        ("file,a\na.png,1\nb.png,1\n", "have the same factors (a=1)"),
        ("file\na.png\n", "only a `file` column"),
        ("file,a\na.png,1,2\n", "line 2: expected 2 fields, got 3"),
        ("file,a\n", "no rows"),
    ],
)
def test_imagefolder_bad_csv(tmp_path: Path, csv: str, message: str) -> None:
    _png(tmp_path / "a.png", _colour(1))
    _png(tmp_path / "b.png", _colour(2))
    (tmp_path / "factors.csv").write_text(csv)
    with pytest.raises(DatasetError, match="factors.csv") as err:
        ImageFolder(tmp_path)
    assert message in str(err.value)


def test_imagefolder_no_images(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no images")
    with pytest.raises(DatasetError, match="no images found"):
        ImageFolder(tmp_path)
    with pytest.raises(DatasetError, match="not a folder"):
        ImageFolder(tmp_path / "absent")

"""npz.py directly: stored members mapped in place, compressed members cached once, errors."""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from loader_checks import no_temp_files, refuse_pickle, truncated_copy

from factordiff.data.npz import (
    memmap_npz_member,
    read_npz_member,
)
from factordiff.errors import DatasetError


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
    assert no_temp_files(cache)


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
        short = truncated_copy(path, tmp_path / f"short_{name}.npz", 0.7)
        with pytest.raises(DatasetError, match="truncated or corrupt"):
            memmap_npz_member(short, "a", cache_dir=tmp_path / "cache")
    # Compressed data damaged in the middle: the stream (or its CRC) fails, no cache left.
    data = bytearray((tmp_path / "packed.npz").read_bytes())
    data[len(data) // 2 : len(data) // 2 + 32] = bytes(32)
    (tmp_path / "damaged.npz").write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="damaged.npz"):
        memmap_npz_member(tmp_path / "damaged.npz", "a", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "damaged.a.npy").exists()
    assert no_temp_files(tmp_path / "cache")


def test_npz_refuses_pickled_members(tmp_path: Path) -> None:
    np.savez(tmp_path / "p.npz", meta=np.array({"a": 1}, dtype=object))
    with (
        mock.patch("pickle.load", refuse_pickle),
        pytest.raises(DatasetError, match="pickle"),
    ):
        memmap_npz_member(tmp_path / "p.npz", "meta")

"""The index <-> factors bijection and disentanglement_lib-compatible sampling."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import factordiff as fd
from factordiff.data.base import GridDataset
from factordiff.errors import DatasetError


@pytest.mark.parametrize("name", ["quickstart", "dsprites", "shapes3d"])
def test_bijection_over_whole_grid(name: str) -> None:
    ds = fd.data.load(name)
    idx = np.arange(len(ds))
    factors = ds.index_to_factors(idx)
    assert factors.shape == (len(ds), len(ds.factor_sizes))
    assert factors.dtype == np.int64
    assert (factors.max(axis=0) + 1).tolist() == list(ds.factor_sizes)
    np.testing.assert_array_equal(ds.factors_to_index(factors), idx)
    # C order: the last factor varies fastest, as in disentanglement_lib.
    assert factors[1, -1] == 1 and factors[1, :-1].sum() == 0
    assert len({tuple(f) for f in factors[:: max(1, len(ds) // 50000)]}) == len(
        factors[:: max(1, len(ds) // 50000)]
    )


def test_published_sizes() -> None:
    assert fd.data.load("shapes3d").factor_sizes == (10, 10, 10, 8, 4, 15)
    assert fd.data.load("dsprites").factor_sizes == (3, 6, 40, 32, 32)
    assert len(fd.data.load("shapes3d")) == 480000
    assert len(fd.data.load("dsprites")) == 737280


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 7), min_size=1, max_size=5), st.data())
def test_bijection_property(sizes: list[int], data: st.DataObject) -> None:
    class Toy(GridDataset):
        name = "toy"
        factor_sizes = tuple(sizes)
        factor_names = tuple(f"f{i}" for i in range(len(sizes)))

    ds = Toy()
    idx = np.array(data.draw(st.lists(st.integers(0, len(ds) - 1), min_size=1, max_size=20)))
    np.testing.assert_array_equal(ds.factors_to_index(ds.index_to_factors(idx)), idx)


def test_sampling_matches_disentanglement_lib() -> None:
    """RandomState sampling draws one randint per factor in order (the reference code)."""
    ds = fd.data.load("shapes3d")
    got = ds.sample_factors(100, np.random.RandomState(0))
    rs = np.random.RandomState(0)
    expected = np.stack([rs.randint(s, size=100) for s in ds.factor_sizes], axis=1)
    np.testing.assert_array_equal(got, expected)
    gen = ds.sample_factors(1000, np.random.default_rng(3))
    assert gen.min() == 0 and (gen.max(axis=0) < np.array(ds.factor_sizes)).all()
    np.testing.assert_array_equal(ds.sample_factors(10, 5), ds.sample_factors(10, 5))


def test_bad_factors_and_indices_are_clear_errors() -> None:
    ds = fd.data.load("dsprites")
    with pytest.raises(DatasetError, match=r"shape \(B, 5\)"):
        ds.images(np.zeros((2, 4), dtype=int))
    with pytest.raises(DatasetError, match="'scale' must be in \\[0, 5\\]"):
        ds.images(np.array([[0, 6, 0, 0, 0]]))
    with pytest.raises(DatasetError, match="integer class indices"):
        ds.images(np.array([[0, 0.5, 0, 0, 0]]))
    with pytest.raises(DatasetError, match="out of range"):
        ds.images_at([len(ds)])
    assert ds.images_at([]).shape == (0, 64, 64, 1)


def test_unknown_dataset_suggests_name() -> None:
    with pytest.raises(DatasetError, match="Did you mean 'shapes3d'"):
        fd.data.load("shape3d")


def test_file_only_dataset_without_root_says_what_to_do() -> None:
    with pytest.raises(DatasetError, match="factordiff data prepare cars3d"):
        fd.data.load("cars3d")

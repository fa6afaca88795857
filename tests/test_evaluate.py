"""evaluate(): the protocol runner, shared sampling and the vector-unit reduction."""

from __future__ import annotations

import numpy as np
import pytest

import factordiff as fd
from factordiff.metrics.evaluate import PROTOCOL, protocol_sizes
from factordiff.metrics.representation import UnitPCA, reduce_representation
from factordiff.metrics.utils import MetricInputError, sample_codes


def _pixels(images: np.ndarray) -> np.ndarray:
    """A crude fixed representation: mean colour of 4 image quadrants (12 codes)."""
    x = images.astype(np.float64) / 255
    h, w = x.shape[1] // 2, x.shape[2] // 2
    quads = [x[:, :h, :w], x[:, :h, w:], x[:, h:, :w], x[:, h:, w:]]
    return np.concatenate([q.mean(axis=(1, 2)) for q in quads], axis=1)


def test_protocol_defaults_are_the_published_ones() -> None:
    assert PROTOCOL["factorvae"] == {
        "batch_size": 64,
        "num_train": 10000,
        "num_eval": 5000,
        "num_variance_estimate": 10000,
        "prune_threshold": 0.05,
    }
    assert PROTOCOL["dci"] == {"num_train": 10000, "num_test": 5000}
    assert PROTOCOL["mig"]["num_bins"] == 20
    assert protocol_sizes(0.1)["sap"] == {"num_train": 1000, "num_test": 500}
    assert protocol_sizes(0.1)["mig"]["num_bins"] == 20


def test_evaluate_runs_each_metric_and_records_the_protocol() -> None:
    ds = fd.data.load("quickstart")
    out = fd.metrics.evaluate(
        _pixels, ds, ["mig", "sap", "modularity", "factorvae"], scale=0.02, progress=False
    )
    assert out["protocol"]["representation"] == "scalars"
    assert out["protocol"]["sizes"]["mig"]["num_train"] == 200
    for name in ("mig", "sap", "modularity", "factorvae"):
        assert "seconds" in out[name]
    assert 0 <= out["mig"]["mig"] <= 1
    assert 0 <= out["factorvae"]["eval_accuracy"] <= 1
    again = fd.metrics.evaluate(_pixels, ds, ["mig"], scale=0.02, progress=False)
    assert again["mig"]["mig"] == out["mig"]["mig"]  # reproducible


def test_array_metrics_see_the_reference_points() -> None:
    """MIG inside evaluate() equals MIG on the points disentanglement_lib would draw."""
    ds = fd.data.load("quickstart")
    out = fd.metrics.evaluate(_pixels, ds, ["mig"], scale=0.05, progress=False)
    codes, factors = sample_codes(_pixels, ds, 500, np.random.RandomState(0))
    assert out["mig"]["mig"] == fd.metrics.mig(codes, factors)["mig"]


def test_datasets_without_factors_only_allow_tad(tmp_path) -> None:
    from PIL import Image

    for i in range(6):
        Image.fromarray(np.full((8, 8, 3), 30 * i, np.uint8)).save(tmp_path / f"{i}.png")
    ds = fd.data.load("imagefolder", root=tmp_path)
    with pytest.raises(MetricInputError, match="no ground-truth factors"):
        fd.metrics.evaluate(_pixels, ds, ["mig", "sap"], scale=0.01, progress=False)


def test_modularity_needs_two_factors() -> None:
    codes = np.random.RandomState(0).rand(50, 3)
    with pytest.raises(MetricInputError, match="at least 2 factors"):
        fd.metrics.modularity(codes, np.arange(50)[:, None] % 3)


def test_unknown_metric() -> None:
    with pytest.raises(MetricInputError, match="unknown metric"):
        fd.metrics.evaluate(_pixels, fd.data.load("quickstart"), ["fvae"], progress=False)


def test_unit_pca_reduces_each_unit_to_its_main_direction() -> None:
    rs = np.random.RandomState(0)
    signal = rs.randn(500, 3)
    directions = rs.randn(3, 4)
    units = signal[:, :, None] * directions[None] + 0.01 * rs.randn(500, 3, 4)
    pca = UnitPCA.fit(units)
    codes = pca.transform(units)
    assert codes.shape == (500, 3)
    for u in range(3):
        assert abs(np.corrcoef(codes[:, u], signal[:, u])[0, 1]) > 0.999


def test_reduce_representation_modes() -> None:
    images = np.random.RandomState(0).randint(0, 255, (64, 8, 8, 3), dtype=np.uint8)

    def vector_units(x: np.ndarray) -> np.ndarray:
        return x.reshape(len(x), 4, -1)[:, :, :6].astype(float)

    fn, mode = reduce_representation(vector_units, images, "auto")
    assert mode == "pca" and fn(images).shape == (64, 4)
    fn, mode = reduce_representation(vector_units, images, "flatten")
    assert mode == "flatten" and fn(images).shape == (64, 24)
    with pytest.raises(MetricInputError, match="vector units"):
        reduce_representation(vector_units, images, "scalars")
    with pytest.raises(MetricInputError, match="scalar codes"):
        reduce_representation(_pixels, images, "pca")


@pytest.mark.parametrize("scale", [-1.0, 0.0, float("nan")])
def test_a_scale_that_is_not_a_positive_share_is_refused(scale: float) -> None:
    ds = fd.data.load("quickstart")
    with pytest.raises(MetricInputError, match="scale must be a positive share"):
        fd.metrics.evaluate(_pixels, ds, ["mig"], scale=scale, progress=False)

"""Cached-codes evaluation: each distinct image encoded once, the same draws and numbers."""

from __future__ import annotations

import numpy as np
import pytest

import factordiff as fd
from factordiff.metrics.code_cache import CodeCache, cache_plan
from factordiff.metrics.evaluate import results_to_json
from factordiff.metrics.factor_vae import factor_vae
from factordiff.metrics.utils import MetricInputError
from metric_cases import MetricTinyGrid, represent_mixed

ALL = ["factorvae", "betavae", "dci", "mig", "sap", "modularity", "infomec"]


def _pixels(images: np.ndarray) -> np.ndarray:
    x = images.astype(np.float64) / 255
    h, w = x.shape[1] // 2, x.shape[2] // 2
    quads = [x[:, :h, :w], x[:, :h, w:], x[:, h:, :w], x[:, h:, w:]]
    return np.concatenate([q.mean(axis=(1, 2)) for q in quads], axis=1)


def _scores(results: dict) -> str:
    """Everything but timings and the protocol record, as JSON (floats written exactly)."""
    out = {}
    for name, res in results.items():
        if name != "protocol":
            out[name] = {k: v for k, v in res.items() if k != "seconds"}
    return results_to_json(out)


class Counting:
    """A representation that records the batch sizes it is called with."""

    def __init__(self, fn) -> None:
        self.fn, self.batches = fn, []

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.batches.append(len(images))
        return self.fn(images)


@pytest.mark.parametrize(
    ("dataset", "represent", "scale"),
    [(MetricTinyGrid(), represent_mixed, 0.1), (fd.data.load("quickstart"), _pixels, 0.005)],
    ids=["tiny", "quickstart"],
)
def test_cached_evaluation_is_bit_for_bit_the_sampling_path(dataset, represent, scale) -> None:
    kwargs = dict(scale=scale, progress=False, dci_backend="lightgbm")
    sampled = fd.metrics.evaluate(represent, dataset, ALL, cache="off", **kwargs)
    counting = Counting(represent)
    cached = fd.metrics.evaluate(counting, dataset, ALL, **kwargs)
    assert _scores(cached) == _scores(sampled)  # exact equality, vote matrices included
    record = cached["protocol"]["codes_cache"]
    assert record["used"] and "deterministic" in record["reason"]
    assert record["images_encoded"] <= record["dataset_images"] == len(dataset)
    assert record["codes_requested"] > 3 * record["images_encoded"]
    assert sampled["protocol"]["codes_cache"] == {
        "used": False,
        "reason": "disabled (cache='off'): every sampled image is represented",
    }
    assert 1 not in counting.batches  # a lone image is never represented alone


def test_each_image_is_encoded_once_and_lone_images_are_padded() -> None:
    ds = MetricTinyGrid()
    counting = Counting(represent_mixed)
    cache = CodeCache(counting, ds, chunk=4)
    first = cache.codes_at(np.array([5, 5, 7]))
    again = cache.codes_at(np.array([7, 5, 9]))  # only 9 is new: padded to a pair
    assert counting.batches == [2, 2]
    assert cache.encoded == 3 and cache.requested == 6
    np.testing.assert_array_equal(again[:2], first[[2, 0]])
    np.testing.assert_array_equal(again[2], represent_mixed(ds.images_at([9]))[0])
    factors = ds.index_to_factors(np.array([9, 5]))
    np.testing.assert_array_equal(cache.codes(factors), again[[2, 1]])


def test_stochastic_representations_keep_the_sampling_path() -> None:
    ds = MetricTinyGrid()
    rng = np.random.default_rng(0)

    def noisy(images: np.ndarray) -> np.ndarray:
        return represent_mixed(images) + 0.1 * rng.standard_normal((len(images), 7))

    out = fd.metrics.evaluate(noisy, ds, ["mig"], scale=0.02, progress=False)
    record = out["protocol"]["codes_cache"]
    assert not record["used"] and "stochastic" in record["reason"]
    noisy.deterministic = True  # a declaration is trusted
    assert cache_plan(noisy, ds, ds.images_at(np.arange(4)))[0]
    with pytest.raises(MetricInputError, match="cache must be"):
        cache_plan(noisy, ds, ds.images_at(np.arange(4)), "sometimes")


def test_shipped_model_scores_the_same_from_cached_codes() -> None:
    """The trained encoder: cached codes give the sampling path's FactorVAE votes exactly
    (on the CPUs measured its codes agree bit for bit across batch sizes >= 2)."""
    model = fd.FactorDiffusion.from_pretrained("quickstart")
    ds = fd.data.load("quickstart")
    size = dict(num_variance_estimate=64, num_train=6, num_eval=4)
    sampled = factor_vae(model.represent, ds, **size)
    cache = CodeCache(model.represent, ds)
    cached = factor_vae(cache, ds, **size)
    assert cached == sampled
    assert cache.encoded < cache.requested == 64 + 10 * 64

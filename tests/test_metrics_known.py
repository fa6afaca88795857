"""Known answers for MIG, SAP, Modularity, FactorVAE and beta-VAE (no reference code needed)."""

from __future__ import annotations

import numpy as np
import pytest

import factordiff as fd
from factordiff.metrics.beta_vae import beta_vae
from factordiff.metrics.factor_vae import factor_vae
from factordiff.metrics.mig import mig
from factordiff.metrics.modularity import modularity, modularity_from_mutual_info
from factordiff.metrics.sap import sap
from factordiff.metrics.utils import (
    MetricInputError,
    histogram_discretize,
    mutual_info,
    sample_codes,
)


def _factors(n: int, sizes=(5, 4, 3), seed: int = 0) -> np.ndarray:
    rs = np.random.RandomState(seed)
    return np.stack([rs.randint(s, size=n) for s in sizes], axis=1)


def _perfect_codes(factors: np.ndarray, seed: int = 1) -> np.ndarray:
    rs = np.random.RandomState(seed)
    return factors + 0.01 * rs.randn(*factors.shape)


def _rotated(codes: np.ndarray, seed: int = 2) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.RandomState(seed).randn(codes.shape[1], codes.shape[1]))
    return codes @ q


def test_mutual_info_and_discretisation_by_hand() -> None:
    f = np.array([0, 0, 1, 1])
    assert mutual_info(f, f) == pytest.approx(np.log(2))
    assert mutual_info(f, np.array([0, 1, 0, 1])) == pytest.approx(0.0, abs=1e-12)
    bins = histogram_discretize(np.array([[0.0], [0.5], [1.0]]), 20)[:, 0]
    assert bins.tolist() == [1, 11, 20]  # max lands in the last bin


def test_mig_by_hand() -> None:
    factors = np.array([[0], [0], [1], [1]])
    codes = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    out = mig(codes, factors)
    assert out["mig"] == pytest.approx(1.0)
    # Both codes copy the factor: no gap.
    assert mig(np.repeat(codes[:, :1], 2, axis=1), factors)["mig"] == pytest.approx(0.0)


def test_mig_perfect_rotated_permuted() -> None:
    factors = _factors(4000)
    codes = _perfect_codes(factors)
    perfect = mig(codes, factors)["mig"]
    assert perfect > 0.95
    assert mig(_rotated(codes), factors)["mig"] < perfect - 0.3
    assert mig(codes[:, ::-1], factors)["mig"] == pytest.approx(perfect, abs=1e-12)


def test_modularity_by_hand() -> None:
    assert modularity_from_mutual_info(np.array([[1.0, 0.0], [0.5, 0.5]])) == pytest.approx(0.5)
    # A dead code scores 0 and counts in the mean.
    assert modularity_from_mutual_info(np.array([[1.0, 0.0], [0.0, 0.0]])) == pytest.approx(0.5)


def test_modularity_and_explicitness_perfect_vs_rotated() -> None:
    factors, factors_test = _factors(3000), _factors(1000, seed=5)
    codes, codes_test = _perfect_codes(factors), _perfect_codes(factors_test, seed=6)
    good = modularity(codes, factors, codes_test, factors_test)
    assert good["modularity"] > 0.99
    assert good["explicitness_test"] > 0.95
    bad = modularity(_rotated(codes), factors)
    assert bad["modularity"] < good["modularity"] - 0.1


def test_sap_by_hand_and_perfect() -> None:
    factors, factors_test = _factors(2000, (2, 3)), _factors(1000, (2, 3), seed=4)
    noise = np.random.RandomState(9).rand(2000, 1)
    codes = np.concatenate([factors[:, :1] * 10.0, noise], axis=1)
    codes_test = np.concatenate([factors_test[:, :1] * 10.0, noise[:1000]], axis=1)
    out = sap(codes, factors, codes_test, factors_test)
    score = np.array(out["score_matrix"])
    # Code 0 predicts factor 0 perfectly; nothing predicts factor 1 beyond chance.
    assert score[0, 0] == pytest.approx(1.0)
    gap0 = score[0, 0] - score[1, 0]
    gap1 = abs(score[0, 1] - score[1, 1])
    assert out["sap"] == pytest.approx((gap0 + gap1) / 2)
    f3, f3_test = _factors(3000), _factors(1500, seed=8)
    perfect = sap(_perfect_codes(f3), f3, _perfect_codes(f3_test, 3), f3_test)["sap"]
    rotated = sap(_rotated(_perfect_codes(f3)), f3, _rotated(_perfect_codes(f3_test, 3)), f3_test)
    assert perfect > rotated["sap"] + 0.1


@pytest.mark.parametrize(
    ("codes", "factors", "message"),
    [
        (np.zeros((10, 2)), np.zeros((9, 1), int), "9 rows but the codes have 10"),
        (np.full((10, 2), np.nan), np.zeros((10, 1), int), "NaN"),
        (np.zeros((10, 2, 2)), np.zeros((10, 1), int), "2-D"),
        (np.zeros((10, 2)), np.full((10, 1), 0.5), "integer class indices"),
        (np.random.rand(10, 2), np.zeros((10, 1), int), "constant"),
    ],
)
def test_mig_input_errors(codes, factors, message) -> None:
    with pytest.raises(MetricInputError, match=message):
        mig(codes, factors)


# --- sampling metrics on an identity representation of a procedural dataset -------------


@pytest.fixture(scope="module")
def quickstart_identity(tmp_path_factory):
    """The quick-start dataset and a representation returning each image's true factors."""
    ds = fd.data.load("quickstart", cache_dir=tmp_path_factory.mktemp("cache"))
    images = ds.images_at(np.arange(len(ds)))
    lookup = {img.tobytes(): ds.index_to_factors([i])[0] for i, img in enumerate(images)}
    assert len(lookup) == len(ds)  # every factor combination renders a distinct image

    def represent(batch: np.ndarray) -> np.ndarray:
        return np.stack([lookup[img.tobytes()] for img in batch]).astype(np.float64)

    return ds, represent


def test_factor_vae_identity_is_perfect(quickstart_identity) -> None:
    ds, represent = quickstart_identity
    out = factor_vae(represent, ds, num_train=200, num_eval=100, num_variance_estimate=1000)
    assert out["eval_accuracy"] == 1.0 and out["num_active_dims"] == 5
    assert out["eval_accuracy_per_factor"] == [1.0] * 5
    mixed = factor_vae(
        lambda x: _rotated(represent(x), 3),
        ds,
        num_train=200,
        num_eval=100,
        num_variance_estimate=1000,
    )
    assert mixed["eval_accuracy"] < 0.9


def test_factor_vae_per_factor_accuracy_shows_the_factor_without_a_unit(
    quickstart_identity,
) -> None:
    """Two factors folded into one code: fixing either leaves that code the least varying,
    so both vote for it and the classifier can name only one; the other scores 0."""
    ds, represent = quickstart_identity

    def merged(x: np.ndarray) -> np.ndarray:
        codes = represent(x)
        return np.concatenate([codes[:, :1] * 10 + codes[:, 1:2], codes[:, 2:]], axis=1)

    out = factor_vae(merged, ds, num_train=300, num_eval=200, num_variance_estimate=1000)
    per_factor = out["eval_accuracy_per_factor"]
    assert per_factor[2:] == [1.0, 1.0, 1.0]
    assert sorted(per_factor[:2]) == [0.0, 1.0]


def test_factor_vae_reproducible_and_quirk_option(quickstart_identity) -> None:
    ds, represent = quickstart_identity

    def with_dead_code(x: np.ndarray) -> np.ndarray:
        codes = represent(x)
        return np.concatenate([np.zeros((len(x), 1)), codes], axis=1)  # code 0 is pruned

    kwargs = {"num_train": 100, "num_eval": 50, "num_variance_estimate": 500}
    a = factor_vae(with_dead_code, ds, seed=3, **kwargs)
    assert a == factor_vae(with_dead_code, ds, seed=3, **kwargs)
    assert a["num_active_dims"] == 5
    fixed = factor_vae(with_dead_code, ds, seed=3, index_quirk=False, **kwargs)
    # The reference's quirk shifts every vote one column left (onto the dead code 0);
    # the corrected indexing puts factor k's votes on code k + 1. Accuracy is the same:
    # the relabelling of columns is one-to-one.
    quirk_votes, votes = np.array(a["train_votes"]), np.array(fixed["train_votes"])
    np.testing.assert_array_equal(quirk_votes[:, :-1], votes[:, 1:])
    assert np.diag(votes[:, 1:]).sum() == votes.sum()
    assert a["eval_accuracy"] == fixed["eval_accuracy"] == 1.0


def test_beta_vae_identity_is_perfect(quickstart_identity) -> None:
    ds, represent = quickstart_identity
    out = beta_vae(represent, ds, num_train=200, num_eval=100)
    assert out["eval_accuracy"] > 0.98


def test_sample_codes_matches_reference_draw_order() -> None:
    ds = fd.data.load("quickstart")
    _, factors = sample_codes(
        lambda x: x.reshape(len(x), -1)[:, :2], ds, 40, np.random.RandomState(0)
    )
    rs = np.random.RandomState(0)
    expected = []
    for n in (16, 16, 8):  # disentanglement_lib samples in batches of 16
        expected.append(np.stack([rs.randint(s, size=n) for s in ds.factor_sizes], axis=1))
    np.testing.assert_array_equal(factors, np.concatenate(expected))

"""HDDC: known answers, recovery of a known model, GMM equivalence, batching, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture

from factordiff.models.hddc import HDDC, MODELS, cattell_dims, fit_mixtures

SUBSPACE_MODELS = [m for m in MODELS if m != "full"]


def simulate(seed: int = 1, n: int = 150, p: int = 10) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Three classes drawn from an HDDC model: d = (2, 3, 2), noise b = (0.5, 0.3, 0.4)."""
    rs = np.random.RandomState(seed)
    specs = [((10, 8), 0.5), ((12, 9, 6), 0.3), ((15, 7), 0.4)]
    xs, ys = [], []
    for k, (signal, noise) in enumerate(specs):
        basis, _ = np.linalg.qr(rs.randn(p, p))
        var = np.r_[signal, [noise] * (p - len(signal))]
        mean = np.zeros(p)
        mean[k], mean[3 + k] = 12.0 * (-1) ** k, 6.0
        xs.append((rs.randn(n, p) * np.sqrt(var)) @ basis.T + mean)
        ys += [k] * n
    return np.vstack(xs), np.array(ys), [len(s) for s, _ in specs]


def test_cattell_picks_the_last_large_gap() -> None:
    assert int(cattell_dims(torch.tensor([10.0, 9.0, 1.0, 0.9, 0.8]))) == 2
    assert int(cattell_dims(torch.tensor([10.0, 1.0, 0.9, 0.8]))) == 1
    # gaps 4, 3, 0.1 -> normalised 1, 0.75, 0.025: the largest index above 0.2 is 2
    assert int(cattell_dims(torch.tensor([10.0, 6.0, 3.0, 2.9]))) == 2
    assert int(cattell_dims(torch.tensor([10.0, 6.0, 3.0, 2.9]), threshold=0.8)) == 1


@pytest.mark.parametrize("model", SUBSPACE_MODELS)
def test_recovers_partition_and_dimensions_of_a_known_model(model: str) -> None:
    x, y, true_dims = simulate()
    fitted = HDDC(3, model=model, random_state=0).fit(x)
    assert adjusted_rand_score(y, fitted.labels_) >= 0.95
    # map each fitted class to its true class by majority, then compare d_k
    for k in range(3):
        true = np.bincount(y[fitted.labels_ == k], minlength=3).argmax()
        assert fitted.dims_[k] == true_dims[true]
    proba = fitted.predict_proba(x)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-9)
    assert fitted.loglik_history_[-1] >= fitted.loglik_history_[0] - 1e-6


def test_full_model_matches_sklearn_gaussian_mixture() -> None:
    x, y, _ = simulate(seed=2)
    ours = HDDC(3, model="full", init=y, tol=1e-8).fit(x)
    means = np.array([x[y == k].mean(0) for k in range(3)])
    ref = GaussianMixture(3, means_init=means, reg_covar=0.0, tol=1e-8, max_iter=500).fit(x)
    assert ours.score(x) == pytest.approx(ref.score(x), rel=1e-8)
    assert ours.bic(x) == pytest.approx(ref.bic(x), rel=1e-8)


def test_batched_fits_equal_separate_fits() -> None:
    x1, _, _ = simulate(seed=3)
    x2, _, _ = simulate(seed=4)
    xb = torch.tensor(np.stack([x1, x2]))
    init = torch.stack([torch.arange(450) % 3, torch.arange(450) // 150])
    batched = fit_mixtures(xb, 3, init=init, max_iter=50, tol=0.0)
    for u, xu in enumerate((x1, x2)):
        alone = fit_mixtures(torch.tensor(xu)[None], 3, init=init[u : u + 1], max_iter=50, tol=0.0)
        torch.testing.assert_close(batched.loglik[u : u + 1], alone.loglik)
        assert torch.equal(batched.params.dims[u], alone.params.dims[0])


def test_score_bic_and_icl_are_consistent() -> None:
    x, _, _ = simulate()
    fitted = HDDC(3, random_state=0).fit(x)
    assert fitted.score(x) * len(x) == pytest.approx(fitted.loglik_, rel=1e-9)
    m = fitted.n_parameters_
    assert fitted.bic(x) == pytest.approx(-2 * fitted.loglik_ + m * np.log(len(x)), rel=1e-9)
    assert fitted.icl(x) >= fitted.bic(x)
    assert np.array_equal(fitted.predict(x), fitted.labels_)


def test_bic_dimension_selection_finds_the_true_dimensions() -> None:
    x, y, true_dims = simulate()
    fitted = HDDC(3, d_select="bic", init=y).fit(x)
    assert sorted(fitted.dims_.tolist()) == sorted(true_dims)


def test_runs_on_torch_tensors_and_is_seeded() -> None:
    x, _, _ = simulate()
    a = HDDC(3, init="random", random_state=5).fit(torch.tensor(x))
    b = HDDC(3, init="random", random_state=5).fit(x)
    assert a.loglik_ == b.loglik_


@pytest.mark.parametrize(
    ("kwargs", "data", "match"),
    [
        ({"model": "AkjBk"}, None, "unknown HDDC model"),
        ({"d_select": "aic"}, None, "d_select"),
        ({}, np.full((10, 3), np.nan), "NaN"),
        ({}, np.zeros(5), "2-D"),
        ({"n_components": 6}, np.random.RandomState(0).randn(10, 3), "too few"),
    ],
)
def test_bad_input_is_a_clear_error(kwargs: dict, data, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        HDDC(**kwargs).fit(data if data is not None else np.zeros((10, 3)))


def test_unfitted_use_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        HDDC().predict(np.zeros((3, 2)))


FIXTURES = Path(__file__).parent / "fixtures"


def _reference_cases():
    ref = json.loads((FIXTURES / "hddc_reference.json").read_text())
    for dataset in ("crabs", "simulated"):
        for name, runs in ref["results"][dataset].items():
            yield pytest.param(dataset, name, runs, id=f"{dataset}-{name}")


def _load_csv(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    table = np.genfromtxt(FIXTURES / f"hddc_{dataset}.csv", delimiter=",", names=True)
    names = [n for n in table.dtype.names if n != "class"]
    x = np.stack([table[n] for n in names], axis=1)
    return x, table["class"].astype(int) - 1  # HDclassif numbers classes from 1


@pytest.mark.parametrize(("dataset", "name", "runs"), list(_reference_cases()))
def test_matches_hdclassif(dataset: str, name: str, runs: dict) -> None:
    """Same initial partition -> HDclassif's log-likelihood trace, d_k, BIC, ICL, partition
    (numbers from HDclassif 2.2.2 itself: tests/fixtures/hddc_reference.R)."""
    x, labels = _load_csv(dataset)
    model, _, select = name.partition("_dselect_")
    ref = runs["given_partition"]
    fitted = HDDC(len(np.unique(labels)), model=model, init=labels,
                  d_select="bic" if select else "cattell").fit(x)  # fmt: skip
    assert fitted.n_iter_ == ref["iterations"]
    np.testing.assert_allclose(fitted.loglik_history_, np.ravel(ref["loglik_all"]), rtol=1e-9)
    assert fitted.dims_.tolist() == np.ravel(ref["d"]).tolist()
    assert -fitted.bic(x) == pytest.approx(
        ref["BIC"], rel=1e-9
    )  # HDclassif maximises 2LL - m log n
    assert -fitted.icl(x) == pytest.approx(ref["ICL"], rel=1e-6)
    assert fitted.labels_.tolist() == (np.ravel(ref["class"]) - 1).tolist()
    np.testing.assert_allclose(fitted.weights_, np.ravel(ref["prop"]), rtol=1e-9)

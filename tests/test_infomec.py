"""InfoMEC: agreement with the reference (kylehkhsu/tripod) and known answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import factordiff as fd
from factordiff.metrics.infomec import infomec
from factordiff.metrics.utils import MetricInputError, sample_codes
from metric_cases import MetricTinyGrid, case, quantised, represent_mixed

REFERENCE = json.loads((Path(__file__).parent / "fixtures" / "infomec_reference.json").read_text())
SCORES = ("infom", "infoe", "infoc")
#: Agreement with the reference, per score. Everything is exact to 1e-6 but InfoE with
#: discrete latents: its readout is an unregularised (C = inf) logistic regression on
#: separable one-hot features that lbfgs stops at the reference's 100 iterations, far from
#: convergence, so where it stops depends on the rounding of BLAS dot products. Measured:
#: OpenBLAS's SkylakeX kernel moves it 1.7e-6 from the Zen / Haswell kernels, and a 1e-14
#: relative perturbation of the features moves it up to 7.5e-5 (fixtures/README.md).
TOLERANCE = {"continuous": dict.fromkeys(SCORES, 1e-6),
             "discrete": {"infom": 1e-6, "infoe": 2e-4, "infoc": 1e-6}}  # fmt: skip
OPENBLAS_KERNELS = ("Zen", "Haswell", "SkylakeX")


def scores_of_case(kind: str, key: str) -> dict:
    """Ours on a reference case: the raw codes (continuous) or quantised ones (discrete)."""
    codes, factors = case(key)[:2]
    if kind == "discrete":
        return infomec(quantised(codes), factors, discrete_latents=True)
    return infomec(codes, factors)


def assert_matches_reference(kind: str, key: str, out: dict) -> None:
    ref = REFERENCE[kind][key]
    for score in SCORES:
        assert out[score] == pytest.approx(ref[score], abs=TOLERANCE[kind][score]), score
    np.testing.assert_allclose(out["nmi"], ref["nmi"], atol=1e-6)
    assert np.asarray(out["active_latents"]).tolist() == ref["active_latents"]


def _params(kind: str) -> list:
    keys = REFERENCE[kind]
    return [pytest.param(k, marks=pytest.mark.slow) if k.endswith("/full") else k for k in keys]


@pytest.mark.parametrize("key", _params("continuous"))
def test_continuous_latents_match_the_reference(key: str) -> None:
    assert_matches_reference("continuous", key, scores_of_case("continuous", key))


@pytest.mark.parametrize("key", _params("discrete"))
def test_discrete_latents_match_the_reference(key: str) -> None:
    assert_matches_reference("discrete", key, scores_of_case("discrete", key))


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return set(next((ln for ln in text.splitlines() if ln.startswith("flags")), "").split())


@pytest.mark.parametrize("kernel", OPENBLAS_KERNELS)
def test_reference_agreement_holds_on_each_openblas_kernel(kernel: str) -> None:
    """A fresh process with OpenBLAS forced to one CPU kernel: users' CPUs pick different ones
    (Intel Xeon: SkylakeX, AMD EPYC: Zen), and the suite must pass on all of them."""
    if kernel == "SkylakeX" and "avx512f" not in _cpu_flags():
        pytest.skip("this CPU cannot run OpenBLAS's AVX-512 kernel")
    keys = [(kind, k) for kind in ("continuous", "discrete") for k in REFERENCE[kind]
            if k.endswith("/reduced")]  # fmt: skip
    script = (
        "import json, sys; from test_infomec import scores_of_case; "
        f"keys = {keys!r}; "
        "print(json.dumps([{s: float(v) if s.startswith('info') else "
        "[list(map(float, r)) for r in v] if s == 'nmi' else list(map(bool, v)) "
        "for s, v in scores_of_case(*k).items() if s in ('infom', 'infoe', 'infoc', 'nmi', "
        "'active_latents')} for k in keys]))"
    )
    env = {**os.environ, "OPENBLAS_CORETYPE": kernel, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, check=False, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    for (kind, key), out in zip(keys, json.loads(done.stdout), strict=True):
        assert_matches_reference(kind, key, out)


def _factors(n: int = 2000, sizes=(5, 4, 3), seed: int = 0) -> np.ndarray:
    rs = np.random.RandomState(seed)
    return np.stack([rs.randint(s, size=n) for s in sizes], axis=1)


def _perfect(factors: np.ndarray, seed: int = 1) -> np.ndarray:
    return factors + 0.05 * np.random.RandomState(seed).randn(*factors.shape)


def test_perfect_codes_score_about_one_and_a_rotation_lower() -> None:
    factors = _factors()
    codes = _perfect(factors)
    perfect = infomec(codes, factors)
    assert perfect["infom"] > 0.95 and perfect["infoc"] > 0.95 and perfect["infoe"] > 0.95
    q, _ = np.linalg.qr(np.random.RandomState(2).randn(3, 3))
    rotated = infomec(codes @ q, factors)
    assert rotated["infom"] < perfect["infom"] - 0.2
    assert rotated["infoc"] < perfect["infoc"] - 0.2
    assert rotated["infoe"] > 0.9  # a linear readout sees through a rotation


def test_permuting_codes_or_factors_changes_nothing() -> None:
    factors = _factors()
    rs = np.random.RandomState(3)
    codes = _perfect(factors) @ rs.randn(3, 3) + 0.3 * rs.randn(len(factors), 3)
    base = infomec(codes, factors)
    by_codes = infomec(codes[:, [2, 0, 1]], factors)
    by_factors = infomec(codes, factors[:, [1, 2, 0]])
    for score in SCORES:
        assert by_codes[score] == pytest.approx(base[score], abs=1e-6)
        assert by_factors[score] == pytest.approx(base[score], abs=1e-6)
    np.testing.assert_allclose(by_codes["nmi"], base["nmi"][:, [2, 0, 1]], atol=1e-9)


def test_discrete_perfect_codes_and_inactive_latents() -> None:
    factors = _factors()
    codes = np.concatenate([factors.astype(float), np.zeros((len(factors), 1))], axis=1)
    out = infomec(codes, factors, discrete_latents=True)
    assert out["active_latents"].tolist() == [True, True, True, False]
    # the plug-in MI between a factor and another factor's code is not exactly 0 on a sample
    assert out["infom"] > 0.99 and out["infoc"] > 0.99 and out["infoe"] > 0.99


def test_degenerate_inputs() -> None:
    factors = _factors()
    codes = _perfect(factors)
    one_active = np.concatenate([codes[:, :1], 1e-3 * codes[:, 1:]], axis=1)
    assert np.isnan(infomec(one_active, factors)["infoc"])  # 1 - 1/L = 0, as the reference
    none = infomec(np.zeros((len(factors), 2)), factors)
    assert (none["infom"], none["infoe"], none["infoc"]) == (0.0, 0.0, 0.0)
    with pytest.raises(MetricInputError, match="at least 2 factors"):
        infomec(codes, factors[:, :1])
    constant = factors.copy()
    constant[:, 1] = 0
    with pytest.raises(MetricInputError, match=r"factor column\(s\) \[1\]"):
        infomec(codes, constant)
    with pytest.raises(MetricInputError, match="rows"):
        infomec(codes[:10], factors)


def test_exported_and_run_by_evaluate_on_the_shared_points() -> None:
    """Inside ``evaluate`` InfoMEC sees the points DCI/MIG see (the DyGA evaluation's)."""
    assert fd.metrics.infomec is infomec
    ds = MetricTinyGrid()
    out = fd.metrics.evaluate(represent_mixed, ds, ["infomec"], scale=0.05, progress=False)
    assert out["protocol"]["sizes"]["infomec"] == {"num_train": 500}
    codes, factors = sample_codes(represent_mixed, ds, 500, np.random.RandomState(0))
    expected = infomec(codes, factors)
    for score in SCORES:
        assert out["infomec"][score] == expected[score]
    assert set(fd.metrics.headline(out)) == {"infomec/infom", "infomec/infoe", "infomec/infoc"}

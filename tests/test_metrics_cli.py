"""`factordiff metrics codes.npz`: scores saved codes; bad files are one clear line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from factordiff.errors import FactordiffError
from factordiff.metrics.codes_file import load_codes, score_codes


def _write(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.fixture
def codes_file(tmp_path) -> Path:
    rs = np.random.RandomState(0)
    factors = np.stack([rs.randint(s, size=900) for s in (5, 4, 3)], axis=1)
    codes = np.concatenate([factors + 0.05 * rs.randn(900, 3), rs.randn(900, 1)], axis=1)
    return _write(tmp_path / "codes.npz", codes=codes, factors=factors)


def test_cli_scores_and_writes_json(codes_file, tmp_path) -> None:
    out = tmp_path / "m.json"
    proc = subprocess.run(
        [sys.executable, "-m", "factordiff", "metrics", str(codes_file), "--metrics",
         "mig,sap,modularity,infomec", "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "600 train / 300 test" in proc.stdout
    results = json.loads(out.read_text())
    assert results["mig"]["mig"] > 0.9
    assert results["infomec"]["infoe"] > 0.9 and "infoc" in proc.stdout
    assert set(results) >= {"mig", "sap", "modularity", "infomec"}


def test_split_and_explicit_test_arrays(codes_file, tmp_path) -> None:
    data = load_codes(codes_file)
    assert len(data["codes"]) == 600 and len(data["codes_test"]) == 300
    arrays = dict(np.load(codes_file))
    explicit = _write(
        tmp_path / "explicit.npz",
        codes=arrays["codes"][:500],
        factors=arrays["factors"][:500],
        codes_test=arrays["codes"][500:],
        factors_test=arrays["factors"][500:],
    )
    data = load_codes(explicit)
    assert len(data["codes"]) == 500 and len(data["codes_test"]) == 400
    result = score_codes(data, ["mig"])
    assert result["mig"]["mig"] > 0.9


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"factors": np.zeros((10, 1), int)}, "missing key 'codes'"),
        ({"codes": np.zeros((10, 2)), "factors": np.zeros((9, 1), int)}, "9 rows"),
        ({"codes": np.full((10, 2), np.nan), "factors": np.zeros((10, 1), int)}, "NaN"),
        (
            {"codes": np.zeros((10, 2)), "factors": np.zeros((10, 1), int),
             "codes_test": np.zeros((3, 2))},
            "without 'factors_test'",
        ),
    ],
)  # fmt: skip
def test_bad_codes_files(tmp_path, arrays, message) -> None:
    path = _write(tmp_path / "bad.npz", **arrays)
    with pytest.raises(FactordiffError, match=message):
        load_codes(path)


def test_cli_errors_are_one_line(tmp_path) -> None:
    garbage = tmp_path / "garbage.npz"
    garbage.write_text("not a zip")
    for args, needle in [
        ([str(garbage)], "not an .npz (zip) file"),
        ([str(tmp_path / "missing.npz")], "no such file"),
    ]:
        proc = subprocess.run(
            [sys.executable, "-m", "factordiff", "metrics", *args],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 1 and needle in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_unknown_metric_is_rejected(codes_file) -> None:
    with pytest.raises(FactordiffError, match="cannot run on saved codes"):
        score_codes(load_codes(codes_file), ["fid"])

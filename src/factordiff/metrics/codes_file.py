"""Scoring saved codes: ``factordiff metrics codes.npz``, for any model, not only ours.

The ``.npz`` holds ``codes`` (n, n_codes) float and ``factors`` (n, n_factors) int, one row
per image; optionally ``codes_test`` / ``factors_test`` (else the first ``train_fraction``
of the rows train and the rest test), ``attributes`` (n, n_attributes) binary for TAD,
and ``factor_names``.
"""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import numpy as np

from factordiff.errors import FactordiffError
from factordiff.metrics.utils import MetricInputError, check_codes, check_factors

CODES_FILE_METRICS = ("dci", "mig", "sap", "modularity", "infomec", "tad")

#: The headline numbers of each metric, in the order papers print them.


def load_codes(path: Path, train_fraction: float = 2 / 3) -> dict:
    """Read and validate a codes file; every problem names the file and the key."""
    if not path.is_file():
        raise FactordiffError(f"{path}: no such file (expected an .npz with codes and factors)")
    if not zipfile.is_zipfile(path):
        raise FactordiffError(f"{path}: not an .npz (zip) file; write it with numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise FactordiffError(f"{path}: not a readable .npz file ({exc})") from None
    if "codes" not in arrays:
        raise FactordiffError(f"{path}: missing key 'codes'; found {sorted(arrays)}")
    try:
        codes = check_codes(arrays["codes"], f"{path}: 'codes'")
        out: dict = {"codes": codes, "codes_all": codes}
        if "factors" in arrays:
            out["factors"] = check_factors(arrays["factors"], len(codes), f"{path}: 'factors'")
        if "attributes" in arrays:
            out["attributes"] = np.asarray(arrays["attributes"])
        if "codes_test" in arrays:
            out["codes_test"] = check_codes(arrays["codes_test"], f"{path}: 'codes_test'")
            if "factors_test" not in arrays:
                raise MetricInputError(f"{path}: 'codes_test' given without 'factors_test'")
            out["factors_test"] = check_factors(
                arrays["factors_test"], len(out["codes_test"]), f"{path}: 'factors_test'"
            )
        elif "factors" in out:
            n_train = int(np.ceil(len(codes) * train_fraction))
            if not 2 <= n_train <= len(codes) - 2:
                raise MetricInputError(f"{path}: too few rows ({len(codes)}) to split train/test")
            out["codes_test"], out["factors_test"] = codes[n_train:], out["factors"][n_train:]
            out["codes"], out["factors"] = codes[:n_train], out["factors"][:n_train]
    except MetricInputError as exc:
        raise FactordiffError(str(exc)) from None
    if "factor_names" in arrays:
        out["factor_names"] = [str(x) for x in arrays["factor_names"]]
    return out


def score_codes(data: dict, metrics: list[str], dci_backend: str = "lightgbm") -> dict:
    """Run the chosen array metrics on loaded codes; each result records its seconds."""
    from factordiff.metrics import tad
    from factordiff.metrics.evaluate import score_arrays

    metrics = [m.lower() for m in metrics]
    unknown = [m for m in metrics if m not in CODES_FILE_METRICS]
    if unknown:
        choices = ", ".join(CODES_FILE_METRICS)
        raise FactordiffError(
            f"metric(s) {unknown} cannot run on saved codes; choose from {choices}"
        )
    results: dict = {"n_train": len(data["codes"]), "n_test": len(data.get("codes_test", []))}
    for name in metrics:
        if name != "tad" and "factors" not in data:
            raise FactordiffError(f"{name} needs 'factors' in the codes file")
        start = time.perf_counter()
        if name == "tad":
            if "attributes" not in data:
                raise FactordiffError("tad needs 'attributes' in the codes file")
            res = tad(data["codes_all"], data["attributes"])
        else:
            res = score_arrays(
                name, data["codes"], data["factors"], data.get("codes_test"),
                data.get("factors_test"), dci_backend=dci_backend,
            )  # fmt: skip
        res["seconds"] = round(time.perf_counter() - start, 3)
        results[name] = res
    return results

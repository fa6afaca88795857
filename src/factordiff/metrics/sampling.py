"""Where the sampling metrics (FactorVAE, beta-VAE) get their batches of codes.

Both scores need batches in which one factor is held fixed. ``GridSampler`` draws them
as disentanglement_lib does: factor classes i.i.d. uniform over the grid with the
reference's ``RandomState`` calls, images rendered and represented (or looked up in a
:class:`~factordiff.metrics.code_cache.CodeCache`). ``LabelledSampler`` draws them from a
set of saved codes with factor labels that does not cover the grid once per combination
(``factordiff metrics codes.npz``): rows sharing the fixed factor's value are picked at
random, with replacement.

Each sampler offers the three draws the metrics make, in the metric's random order:
``random_codes(n, rs)``, ``fixed_factor_batches(m, rs, batch_size)`` (FactorVAE: m
batches, each with one factor fixed) and ``paired_batches(m, rs, batch_size)``
(beta-VAE: m pairs of batches agreeing, pair by pair, on one factor).
"""

from __future__ import annotations

import numpy as np

from factordiff.data.base import FactorDataset
from factordiff.metrics.utils import MetricInputError, Represent, represent_factors


class GridSampler:
    """Batches from a ground-truth dataset's factor grid (the published protocol)."""

    def __init__(self, represent: Represent, dataset: FactorDataset) -> None:
        self.represent = represent
        self.dataset = dataset
        self.n_factors = len(dataset.factor_sizes)

    def random_codes(self, n: int, rs: np.random.RandomState) -> np.ndarray:
        factors = self.dataset.sample_factors(n, rs)
        return represent_factors(self.represent, self.dataset, factors)

    def fixed_factor_batches(
        self, m: int, rs: np.random.RandomState, batch_size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(m,) fixed factors and (m, batch_size, n_codes) codes; per batch the factor,
        then one ``randint`` per factor, the fixed value taken from the batch's first row."""
        chosen, batches = [], []
        for _ in range(m):
            k = rs.randint(self.n_factors)
            factors = self.dataset.sample_factors(batch_size, rs)
            factors[:, k] = factors[0, k]
            chosen.append(k)
            batches.append(factors)
        codes = represent_factors(self.represent, self.dataset, np.concatenate(batches))
        return np.asarray(chosen, dtype=np.int64), codes.reshape(m, batch_size, -1)

    def paired_batches(
        self, m: int, rs: np.random.RandomState, batch_size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(m,) shared factors and (m, 2, batch_size, n_codes) codes; per pair the factor,
        then two random batches, the second taking the first's value of that factor."""
        chosen, batches = [], []
        for _ in range(m):
            k = rs.randint(self.n_factors)
            first = self.dataset.sample_factors(batch_size, rs)
            second = self.dataset.sample_factors(batch_size, rs)
            second[:, k] = first[:, k]
            chosen.append(k)
            batches += [first, second]
        codes = represent_factors(self.represent, self.dataset, np.concatenate(batches))
        return np.asarray(chosen, dtype=np.int64), codes.reshape(m, 2, batch_size, -1)


class LabelledSampler:
    """Batches drawn from labelled codes (rows), not from a grid.

    A draw that the protocol makes uniformly over the grid picks a row uniformly; a
    batch with factor k fixed takes a random row, then ``batch_size`` rows with
    replacement among those sharing its value of factor k (so values weigh as often as
    they occur in the file); a beta-VAE pair takes ``batch_size`` random rows, then for
    each a random row with the same value of factor k. Every value of every factor needs
    ``min_rows`` rows (default: the batch size), else the batches would repeat a few
    codes; the error names the first value that has too few.
    """

    def __init__(
        self,
        codes: np.ndarray,
        factors: np.ndarray,
        min_rows: int,
        factor_names: list[str] | None = None,
        source: str = "codes",
    ) -> None:
        self.codes = codes
        self.factors = factors
        self.n_factors = factors.shape[1]
        names = factor_names or [f"factor {i}" for i in range(self.n_factors)]
        self.order: list[np.ndarray] = []
        self.starts: list[np.ndarray] = []
        self.counts: list[np.ndarray] = []
        self.value_of = np.zeros(factors.shape, dtype=np.int64)  # dense value index
        for i in range(self.n_factors):
            values, inverse, counts = np.unique(
                factors[:, i], return_inverse=True, return_counts=True
            )
            if counts.min() < min_rows:
                j = int(np.argmin(counts))
                raise MetricInputError(
                    f"{source}: {names[i]!r} (column {i}) value {values[j]} has "
                    f"{counts[j]} rows; FactorVAE/beta-VAE from labelled codes need >= "
                    f"{min_rows} rows for every factor value (or the full factor grid, "
                    "one row per combination)"
                )
            self.order.append(np.argsort(inverse, kind="stable"))  # rows grouped by value
            self.starts.append(np.concatenate([[0], np.cumsum(counts)[:-1]]))
            self.counts.append(counts)
            self.value_of[:, i] = inverse.reshape(-1)

    def _same_value(self, k: int, rows: np.ndarray, rs: np.random.RandomState) -> np.ndarray:
        """For each of ``rows``, a random row (with replacement) with the same value of k."""
        v = self.value_of[rows, k]
        picks = (rs.random_sample(len(rows)) * self.counts[k][v]).astype(np.int64)
        return self.order[k][self.starts[k][v] + picks]

    def random_codes(self, n: int, rs: np.random.RandomState) -> np.ndarray:
        return self.codes[rs.randint(len(self.codes), size=n)]

    def fixed_factor_batches(
        self, m: int, rs: np.random.RandomState, batch_size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        chosen, rows = [], []
        for _ in range(m):
            k = rs.randint(self.n_factors)
            anchor = rs.randint(len(self.codes))
            chosen.append(k)
            rows.append(self._same_value(k, np.full(batch_size, anchor), rs))
        return np.asarray(chosen, dtype=np.int64), self.codes[np.stack(rows)]

    def paired_batches(
        self, m: int, rs: np.random.RandomState, batch_size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        chosen, rows = [], []
        for _ in range(m):
            k = rs.randint(self.n_factors)
            first = rs.randint(len(self.codes), size=batch_size)
            second = self._same_value(k, first, rs)
            chosen.append(k)
            rows.append(np.stack([first, second]))
        return np.asarray(chosen, dtype=np.int64), self.codes[np.stack(rows)]

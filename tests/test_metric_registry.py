"""The metric registry: one row per metric, one spelling rule, rows that match their
functions, and every reader (config, evaluate, codes files) going through it."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from factordiff.config import load_config
from factordiff.errors import ConfigError, MetricInputError
from factordiff.metric_registry import METRICS, normalise, resolve, score_arrays


def test_names_are_normalised_once_for_every_reader() -> None:
    assert resolve(["Factor-VAE", "d_c_i", " MIG "]) == ["factorvae", "dci", "mig"]
    assert normalise("Beta_VAE") == "betavae"
    with pytest.raises(MetricInputError, match=r"'factorvea' \(did you mean 'factorvae'\?\)"):
        resolve(["factorvea"])


@pytest.mark.parametrize("name", sorted(METRICS))
def test_each_row_names_a_function_that_takes_what_the_row_passes(name: str) -> None:
    metric = METRICS[name]
    fn = metric.load()
    assert fn.__name__ == metric.function and metric.headline
    params = inspect.signature(fn).parameters
    assert all(option in params for option in metric.options), (name, metric.options)
    if metric.inputs == "arrays":
        positional = [p for p in params.values() if p.default is inspect.Parameter.empty
                      or p.name.endswith("_test")]  # fmt: skip
        assert len(positional) >= (4 if metric.takes_test else 2), name


def test_score_arrays_calls_each_array_metric_as_declared() -> None:
    rs = np.random.RandomState(0)
    factors = rs.randint(0, 4, (400, 2))
    codes = factors + 0.1 * rs.normal(size=(400, 2))
    for name in [n for n, m in METRICS.items() if m.inputs == "arrays"]:
        res = score_arrays(name, codes[:300], factors[:300], codes[300:], factors[300:],
                           dci_backend="sklearn")  # fmt: skip
        assert all(k in res for k in METRICS[name].headline), name
    with pytest.raises(MetricInputError, match="not an array metric"):
        score_arrays("factorvae", codes, factors)


def test_config_checks_eval_metrics_and_choices_with_a_hint() -> None:
    with pytest.raises(ConfigError, match=r"eval.metrics: unknown metric\(s\) 'mgi'"):
        load_config("quickstart", ["eval.metrics=[dci,mgi]"])
    with pytest.raises(ConfigError, match=r"got 'bettavae' \(did you mean 'betavae'\?\)"):
        load_config("quickstart", ["model.family=bettavae"])

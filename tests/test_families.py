"""One family table builds, loads and finds the data of every model family."""

from __future__ import annotations

import subprocess
import sys

import pytest

from factordiff.baseline_pipeline import VAEModel
from factordiff.config import CHOICES, load_config
from factordiff.errors import ConfigError
from factordiff.families import FAMILIES, build_model, load_dataset, load_pretrained
from factordiff.pipeline import FactorDiffusion


def test_every_family_a_config_accepts_has_a_model_class() -> None:
    assert set(FAMILIES) == set(CHOICES["model.family"])


@pytest.mark.parametrize(
    ("preset", "cls"), [("quickstart", FactorDiffusion), ("betavae_quickstart", VAEModel)]
)
def test_build_model_builds_the_family_the_config_names(preset: str, cls: type) -> None:
    assert type(build_model(load_config(preset))) is cls


def test_load_pretrained_reads_the_family_from_the_saved_config() -> None:
    assert type(load_pretrained("quickstart")) is FactorDiffusion


def test_load_dataset_names_the_option_a_dataset_does_not_take() -> None:
    cfg = load_config("quickstart", ["data.in_memory=true"])  # the procedural data has no file
    with pytest.raises(ConfigError, match="data.in_memory / data.cache_dir: not supported"):
        load_dataset(cfg)


def test_model_modules_do_not_import_each_other_to_dispatch() -> None:
    """pipeline is the base; the baseline builds on it; only families knows both."""
    code = "import sys, factordiff.pipeline; print('factordiff.baseline_pipeline' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_cli_loads_the_training_loop_only_for_train() -> None:
    code = (
        "import sys, factordiff.cli; "
        "print(any(m.startswith('factordiff.training') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

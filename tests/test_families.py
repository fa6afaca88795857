"""One family table builds, loads and finds the data of every model family."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

from factordiff.checkpoint import CheckpointError
from factordiff.choices import CHOICES
from factordiff.config import load_config
from factordiff.data import load_dataset
from factordiff.errors import ConfigError
from factordiff.pipeline import FAMILIES, FactorDiffusion, VAEModel, build_model, load_pretrained


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
        load_dataset(cfg.data)


def test_a_family_class_refuses_a_folder_of_another_family() -> None:
    with pytest.raises(CheckpointError, match=r"holds a 'diffusion' model, which VAEModel does "
                       r"not load; fd.load_pretrained\("):  # fmt: skip
        VAEModel.from_pretrained("quickstart")


def test_the_version_comes_from_a_leaf_module() -> None:
    """Modules that record the version import it from ``factordiff._version``, so nothing
    imports the package root (which lazily imports them) back."""
    import factordiff

    roots = [p for p in Path(factordiff.__file__).parent.rglob("*.py")
             if "from factordiff import __version__" in p.read_text()]  # fmt: skip
    assert roots == [] and factordiff.__version__ == importlib.metadata.version("factordiff")


def test_the_cli_loads_the_training_loop_only_for_train() -> None:
    """Nor the metrics (scikit-learn, LightGBM): its help reads their names from the
    registry, which imports no metric."""
    code = (
        "import sys, factordiff.cli; "
        "print(any(m.startswith(('factordiff.training', 'factordiff.metrics.', 'sklearn')) "
        "for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

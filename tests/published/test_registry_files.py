"""The registry names each published loader with the class that reads it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from loader_checks import Built

from factordiff.data.cars3d import Cars3D
from factordiff.data.celeba import CelebA
from factordiff.data.dsprites_file import DSpritesFile
from factordiff.data.mpi3d import MPI3DReal, MPI3DToy
from factordiff.data.registry import DATASETS, load
from factordiff.data.shapes3d_file import Shapes3DFile


@pytest.mark.parametrize(
    ("key", "cls"),
    [
        ("dsprites", DSpritesFile),
        ("shapes3d", Shapes3DFile),
        ("mpi3d_toy", MPI3DToy),
        ("mpi3d_real", MPI3DReal),
        ("cars3d", Cars3D),
    ],
)
def test_class_attributes_match_registry(key: str, cls: type) -> None:
    spec = DATASETS[key]
    assert cls.name == spec.name
    assert cls.factor_names == spec.factor_names
    assert cls.factor_sizes == spec.factor_sizes


def test_registry_loads_the_file_loaders(
    dsprites: Built,
    shapes3d: Built,
    mpi3d: Built,
    cars3d: Built,
    celeba_root: tuple[Path, np.ndarray],
) -> None:
    assert isinstance(load("dsprites", root=dsprites.root), DSpritesFile)
    assert isinstance(load("shapes3d", root=shapes3d.root), Shapes3DFile)
    assert isinstance(load("mpi3d_toy", root=mpi3d.root), MPI3DToy)
    assert isinstance(load("cars3d", root=cars3d.root), Cars3D)
    celeba = load("celeba", root=celeba_root[0], split="test")
    assert isinstance(celeba, CelebA) and len(celeba) == 2

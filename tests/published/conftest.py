"""The expensive stand-in files (full-count dSprites, Shapes3D, MPI3D, Cars3D, CelebA), written
once per session in the exact published layout; see ``published_files.py`` for how they
stay small and fast.

Each loader is checked for keys, dtypes, shapes and factor order (the image at known
factors is the marker written there), the index/factor bijection, lazy reading, and its
error paths: every user-caused problem must be one ``DatasetError`` naming the file, never
a raw h5py/zipfile/scipy traceback.
"""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from loader_checks import Built, refuse_pickle, traced

import published_files as pf
from factordiff.data.cars3d import Cars3D
from factordiff.data.dsprites_file import DSpritesFile
from factordiff.data.mpi3d import MPI3DToy
from factordiff.data.shapes3d_file import Shapes3DFile


@pytest.fixture(scope="session")
def dsprites(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("dsprites")
    markers = pf.write_dsprites(root / pf.DSPRITES_FILE)
    # The cache build must never unpickle ``metadata``: make any unpickling fail.
    with mock.patch("pickle.load", refuse_pickle), mock.patch("pickle.loads", refuse_pickle):
        ds, peak = traced(lambda: DSpritesFile(root))
    return Built(root, ds, markers, peak)


@pytest.fixture(scope="session")
def shapes3d(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("shapes3d")
    markers = pf.write_shapes3d(root / "3dshapes.h5")
    ds, peak = traced(lambda: Shapes3DFile(root))
    return Built(root, ds, markers, peak)


@pytest.fixture(scope="session")
def mpi3d(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("mpi3d")
    markers = pf.write_mpi3d(root / "mpi3d_toy.npz")
    ds, peak = traced(lambda: MPI3DToy(root))
    return Built(root, ds, markers, peak)


@pytest.fixture(scope="session")
def cars3d(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("cars3d")
    pf.write_cars3d(root / "data" / "cars")
    ds, peak = traced(lambda: Cars3D(root))
    return Built(root, ds, {}, peak)


@pytest.fixture(scope="session")
def celeba_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    root = tmp_path_factory.mktemp("celeba")
    return root, pf.write_celeba(root)

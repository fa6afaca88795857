"""Dataset registry: one name -> a procedural generator and/or a loader for published files.

``load(name)`` with no ``root`` gives the procedural version (offline, ground truth);
``load(name, root=DIR)`` reads the published files from ``DIR``. Classes are named as
``"module:Class"`` strings and imported on first use, so listing datasets stays cheap.
"""

from __future__ import annotations

import difflib
import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from factordiff.data.base import FactorDataset
from factordiff.errors import ConfigError, DatasetError

#: Environment variable holding a default data root (``<root>/<dataset name>``).
DATA_ROOT_ENV = "FACTORDIFF_DATA"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    factor_names: tuple[str, ...]
    factor_sizes: tuple[int, ...]
    procedural: str | None = None  # "module:Class" used when no root is given
    files: str | None = None  # "module:Class" reading the published files under a root
    files_hint: str = ""  # what the user must put under root
    image_size: int | None = 64  # native side length; None: only known from the files

    @property
    def source(self) -> str:
        parts = []
        if self.procedural:
            parts.append("procedural")
        if self.files:
            parts.append("files")
        return " + ".join(parts)


_M = "factordiff.data"
DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec(
            "quickstart",
            "Coloured shapes on a plain background, 32x32 RGB; made for the CPU quick start",
            ("shape", "scale", "hue", "pos_x", "pos_y"),
            (3, 4, 6, 6, 6),
            procedural=f"{_M}.quickstart:Quickstart",
            image_size=32,
        ),
        DatasetSpec(
            "dsprites",
            "dSprites: 2D sprites, 64x64 binary (Matthey et al. 2017)",
            ("shape", "scale", "orientation", "pos_x", "pos_y"),
            (3, 6, 40, 32, 32),
            procedural=f"{_M}.dsprites:DSprites",
            files=f"{_M}.dsprites_file:DSpritesFile",
            files_hint="dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz",
        ),
        DatasetSpec(
            "shapes3d",
            "3D Shapes: object in a room, 64x64 RGB (Burgess & Kim 2018)",
            ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation"),
            (10, 10, 10, 8, 4, 15),
            procedural=f"{_M}.shapes3d:Shapes3D",
            files=f"{_M}.shapes3d_file:Shapes3DFile",
            files_hint="3dshapes.h5",
        ),
        DatasetSpec(
            "mpi3d_toy",
            "MPI3D-toy: simulated robot-arm object, 64x64 RGB (Gondal et al. 2019)",
            ("color", "shape", "size", "camera_height", "background", "horizontal", "vertical"),
            (6, 6, 2, 3, 3, 40, 40),
            files=f"{_M}.mpi3d:MPI3DToy",
            files_hint="mpi3d_toy.npz",
        ),
        DatasetSpec(
            "mpi3d_real",
            "MPI3D-real: real robot-arm photographs, 64x64 RGB (Gondal et al. 2019)",
            ("color", "shape", "size", "camera_height", "background", "horizontal", "vertical"),
            (6, 6, 2, 3, 3, 40, 40),
            files=f"{_M}.mpi3d:MPI3DReal",
            files_hint="mpi3d_real.npz",
        ),
        DatasetSpec(
            "mpi3d_realistic",
            "MPI3D-realistic: realistic renders of the robot-arm scene, 64x64 RGB",
            ("color", "shape", "size", "camera_height", "background", "horizontal", "vertical"),
            (6, 6, 2, 3, 3, 40, 40),
            files=f"{_M}.mpi3d:MPI3DRealistic",
            files_hint="mpi3d_realistic.npz",
        ),
        DatasetSpec(
            "cars3d",
            "Cars3D: rendered car models, resized to 64x64 RGB (Reed et al. 2015)",
            ("elevation", "azimuth", "object"),
            (4, 24, 183),
            files=f"{_M}.cars3d:Cars3D",
            files_hint="data/cars/*_mesh.mat (from nips2015-analogy-data.tar.gz)",
        ),
        DatasetSpec(
            "celeba",
            "CelebA aligned faces, cropped to 64x64 RGB, 40 binary attributes (Liu et al. 2015)",
            ("index",),
            (202599,),
            files=f"{_M}.celeba:CelebA",
            files_hint="img_align_celeba/*.jpg and list_attr_celeba.txt",
        ),
        DatasetSpec(
            "imagefolder",
            "Your images (PNG/JPEG) with an optional factors.csv (file, one int column per factor)",
            (),
            (),
            files=f"{_M}.imagefolder:ImageFolder",
            files_hint="*.png / *.jpg, optional factors.csv",
            image_size=None,
        ),
    ]
}


def get_spec(name: str) -> DatasetSpec:
    """The registry entry for ``name``; an unknown name suggests the closest one."""
    key = name.lower().replace("-", "_")
    if key in DATASETS:
        return DATASETS[key]
    close = difflib.get_close_matches(key, list(DATASETS), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise DatasetError(f"unknown dataset {name!r}.{hint} Known: {', '.join(DATASETS)}")


def _import(target: str) -> type:
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def default_root(name: str) -> Path | None:
    """``$FACTORDIFF_DATA/<name>`` when that folder exists."""
    base = os.environ.get(DATA_ROOT_ENV)
    if base and (Path(base) / name).is_dir():
        return Path(base) / name
    return None


def load(name: str, root: str | Path | None = None, **kwargs: Any) -> FactorDataset:
    """Load dataset ``name``: procedural without ``root``, else the published files in it.

    ``kwargs`` go to the dataset class (e.g. ``in_memory=True``, ``image_size=64``).
    """
    spec = get_spec(name)
    if root is None and spec.procedural is None:
        root = default_root(spec.name)
    if root is None:
        if spec.procedural is None:
            raise DatasetError(
                f"dataset {spec.name!r} has no procedural version: give root=DIR holding "
                f"{spec.files_hint}{_how_to_get(spec.name)}"
            )
        return _import(spec.procedural)(**kwargs)
    root = Path(root).expanduser()
    if spec.files is None:
        raise DatasetError(f"dataset {spec.name!r} is procedural only; do not pass a root")
    if not root.exists():
        raise DatasetError(
            f"{spec.name}: data root {root} does not exist (expected {spec.files_hint})"
        )
    return _import(spec.files)(root=root, **kwargs)


def _how_to_get(name: str) -> str:
    """Where the files come from: the download command, or the user's own images."""
    from factordiff.data.download import MANUAL_DATASETS, SOURCES

    if name in SOURCES or name in MANUAL_DATASETS:
        return f" (see `factordiff data prepare {name} --root DIR`)"
    return " (your own files: nothing to download; see docs/datasets.md)"


def names() -> list[str]:
    return list(DATASETS)


class DataSection(Protocol):
    """What ``load_dataset`` reads of a config's ``data`` section (data never imports the
    config module: the config validates dataset names through this registry)."""

    name: str
    root: str | None
    in_memory: bool
    cache_dir: str | None


def load_dataset(data: DataSection) -> FactorDataset:
    """The dataset a run's ``data`` section names, with the loading options only some
    datasets take: ``load_dataset(cfg.data)``."""
    kwargs: dict = {}
    if data.in_memory:
        kwargs["in_memory"] = True
    if data.cache_dir:
        kwargs["cache_dir"] = data.cache_dir
    try:
        return load(data.name, root=data.root, **kwargs)
    except TypeError as exc:  # an option the dataset's class does not take
        raise ConfigError(
            f"data.in_memory / data.cache_dir: not supported for dataset {data.name!r} "
            f"with data.root={data.root!r} ({exc})"
        ) from None

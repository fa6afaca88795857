"""Procedural Shapes3D: the ``3dshapes.h5`` factor grid rendered as a small 3D room.

Same factors, order and values as the published file (Burgess & Kim 2018): floor, wall
and object hue in {0, 0.1, ..., 0.9}, scale linspace(0.75, 1.25, 8), shape {cube,
cylinder, sphere, capsule}, orientation linspace(-30, 30, 15) degrees; 480,000 images
of 64x64 RGB. The scene is ray-cast (``shapes3d_scene``); read the published file with
``fd.data.load("shapes3d", root=DIR)`` instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from factordiff.data.procedural import ProceduralDataset
from factordiff.data.shapes3d_scene import render_scenes

FACTOR_VALUES = (
    np.round(np.linspace(0.0, 0.9, 10), 2),
    np.round(np.linspace(0.0, 0.9, 10), 2),
    np.round(np.linspace(0.0, 0.9, 10), 2),
    np.linspace(0.75, 1.25, 8),
    np.arange(4, dtype=np.float64),
    np.linspace(-30.0, 30.0, 15),
)


class Shapes3D(ProceduralDataset):
    name = "shapes3d"
    factor_names = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
    factor_sizes = (10, 10, 10, 8, 4, 15)
    image_shape = (64, 64, 3)
    shape_names = ("cube", "cylinder", "sphere", "capsule")

    def __init__(self, supersample: int = 2, cache_dir: str | Path | None = None) -> None:
        self.supersample = supersample
        super().__init__(cache_dir)

    @property
    def factor_values(self) -> tuple[np.ndarray, ...]:
        return FACTOR_VALUES

    def render_params(self) -> dict:
        return {"image_shape": list(self.image_shape), "supersample": self.supersample}

    def _render(self, factors: np.ndarray) -> np.ndarray:
        values = [vals[factors[:, i]] for i, vals in enumerate(FACTOR_VALUES)]
        return render_scenes(*values, size=self.image_shape[0], supersample=self.supersample)

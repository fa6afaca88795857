"""Procedural dSprites: the published factor grid, rendered on demand.

Same factors, class counts and values as ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz``
(colour dropped, as disentanglement_lib does): shape {square, ellipse, heart}, scale
linspace(0.5, 1, 6), orientation linspace(0, 2pi, 40), pos_x / pos_y linspace(0, 1, 32).
Images are binary 64x64, returned as uint8 {0, 255} with one channel.

Like the published file, orientation 0 and 2pi are both present (the first and last
classes render identically), and squares repeat every quarter turn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from factordiff.data.procedural import ProceduralDataset

SIZE = 64
#: Sprite half-extent in pixels at scale 1 and the range of sprite centres in pixels.
HALF_EXTENT = 9.5
CENTRE_MIN, CENTRE_MAX = 14.0, 50.0


class DSprites(ProceduralDataset):
    name = "dsprites"
    factor_names = ("shape", "scale", "orientation", "pos_x", "pos_y")
    factor_sizes = (3, 6, 40, 32, 32)
    image_shape = (SIZE, SIZE, 1)
    shape_names = ("square", "ellipse", "heart")

    def __init__(self, cache_dir: str | Path | None = None) -> None:
        super().__init__(cache_dir)

    @property
    def factor_values(self) -> tuple[np.ndarray, ...]:
        return (
            np.array([1.0, 2.0, 3.0]),  # the published file codes shapes as 1, 2, 3
            np.linspace(0.5, 1.0, 6),
            np.linspace(0.0, 2 * np.pi, 40),
            np.linspace(0.0, 1.0, 32),
            np.linspace(0.0, 1.0, 32),
        )

    def _render(self, factors: np.ndarray) -> np.ndarray:
        shape_v, scale_v, orient_v, x_v, y_v = (
            vals[factors[:, i]] for i, vals in enumerate(self.factor_values)
        )
        pix = np.arange(SIZE, dtype=np.float32) + 0.5
        cx = (CENTRE_MIN + (CENTRE_MAX - CENTRE_MIN) * x_v).astype(np.float32)[:, None, None]
        cy = (CENTRE_MIN + (CENTRE_MAX - CENTRE_MIN) * y_v).astype(np.float32)[:, None, None]
        dx = pix[None, None, :] - cx  # columns follow pos_x
        dy = pix[None, :, None] - cy  # rows follow pos_y (downwards)
        cos = np.cos(orient_v).astype(np.float32)[:, None, None]
        sin = np.sin(orient_v).astype(np.float32)[:, None, None]
        half = (HALF_EXTENT * scale_v).astype(np.float32)[:, None, None]
        # Rotate the sampling grid by -orientation, so the sprite turns counter-clockwise.
        u = (cos * dx - sin * dy) / half
        v = (sin * dx + cos * dy) / half
        shape = shape_v.astype(np.int64)[:, None, None]
        square = (np.abs(u) <= 0.8) & (np.abs(v) <= 0.8)
        ellipse = u**2 + (v / 0.5) ** 2 <= 1.0
        hx, hy = u * 1.15, -v * 1.15 + 0.15  # heart curve spans ~[-1.14, 1.14] x [-1, 1.25]
        heart = (hx**2 + hy**2 - 1) ** 3 - hx**2 * hy**3 <= 0
        mask = np.where(shape == 1, square, np.where(shape == 2, ellipse, heart))
        return (mask.astype(np.uint8) * 255)[..., None]

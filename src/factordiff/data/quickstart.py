"""The quick-start dataset: small, clearly structured, learnable on a CPU in minutes.

Five factors, 3 x 4 x 6 x 6 x 6 = 2,592 images: shape {square, circle, triangle},
scale (4), hue (6 well separated colours), pos_x (6) and pos_y (6), one anti-aliased
object on a plain dark background.

Why 32x32 and not 64x64: the quick start must train a diffusion model *on a CPU* in
minutes. At 32x32 the encoder and U-Net see a quarter of the pixels, the diffusion can run
in pixel space or on an 8x8 latent, and every factor is still several pixels wide (the
smallest object spans 6 px; neighbouring positions are 3.2 px apart). Pass ``image_size``
to render the same grid at another resolution.
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np

from factordiff.data.procedural import ProceduralDataset

BACKGROUND = np.array([24, 26, 34], dtype=np.float32)
SUPERSAMPLE = 4


class Quickstart(ProceduralDataset):
    name = "quickstart"
    factor_names = ("shape", "scale", "hue", "pos_x", "pos_y")
    factor_sizes = (3, 4, 6, 6, 6)
    shape_names = ("square", "circle", "triangle")

    def __init__(self, image_size: int = 32, cache_dir: str | Path | None = None) -> None:
        if image_size < 16:
            raise ValueError(f"quickstart image_size must be >= 16, got {image_size}")
        self.image_shape = (image_size, image_size, 3)
        super().__init__(cache_dir)

    @property
    def factor_values(self) -> tuple[np.ndarray, ...]:
        return (
            np.arange(3, dtype=np.float64),
            np.linspace(0.2, 0.35, 4),  # half-extent as a fraction of the image side
            np.arange(6) / 6.0,  # hue
            np.linspace(0.3, 0.7, 6),  # centre as a fraction of the image side
            np.linspace(0.3, 0.7, 6),
        )

    def _render(self, factors: np.ndarray) -> np.ndarray:
        shape_v, scale_v, hue_v, x_v, y_v = (
            vals[factors[:, i]] for i, vals in enumerate(self.factor_values)
        )
        size = self.image_shape[0]
        fine = size * SUPERSAMPLE
        grid = (np.arange(fine, dtype=np.float32) + 0.5) / fine  # in [0, 1]
        dx = (grid[None, None, :] - x_v[:, None, None]).astype(np.float32)
        dy = (grid[None, :, None] - y_v[:, None, None]).astype(np.float32)
        half = scale_v.astype(np.float32)[:, None, None] * 0.5
        square = (np.abs(dx) <= half * 0.85) & (np.abs(dy) <= half * 0.85)
        circle = dx**2 + dy**2 <= half**2
        # Upward triangle: base at +half, apex at -half (rows grow downwards).
        triangle = (dy <= half * 0.8) & (dy >= -half) & (np.abs(dx) <= (dy + half) * 0.6)
        shape = shape_v.astype(np.int64)[:, None, None]
        mask = np.where(shape == 0, square, np.where(shape == 1, circle, triangle))
        cover = mask.reshape(len(factors), size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(2, 4))
        colours = np.array([colorsys.hsv_to_rgb(h, 0.85, 0.95) for h in hue_v], np.float32) * 255
        img = cover[..., None] * colours[:, None, None, :] + (1 - cover[..., None]) * BACKGROUND
        return np.clip(np.rint(img), 0, 255).astype(np.uint8)

    def render_params(self) -> dict:
        return {"image_shape": list(self.image_shape), "supersample": SUPERSAMPLE}

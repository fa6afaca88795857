"""The procedural 3D Shapes renderer: factors map to the right pixels, and every one shows."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
from matplotlib.colors import rgb_to_hsv

from factordiff.data import shapes3d_scene
from factordiff.data.shapes3d_scene import render_scenes

HUES = np.arange(10) / 10
SCALES = np.linspace(0.75, 1.25, 8)
ORIENTATIONS = np.linspace(-30, 30, 15)
FACTORS = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
VALUES = {
    "floor_hue": HUES,
    "wall_hue": HUES,
    "object_hue": HUES,
    "scale": SCALES,
    "shape": np.arange(4),
    "orientation": ORIENTATIONS,
}
BASE = {
    "floor_hue": 0.0,
    "wall_hue": 0.5,
    "object_hue": 0.3,
    "scale": 1.0,
    "shape": 0,
    "orientation": 0.0,
}
# Pixels that are pure floor / wall / object for every shape, scale and orientation.
FLOOR_PIXELS = [(60, 2), (62, 32), (61, 61)]
WALL_PIXELS = [(2, 2), (4, 32), (1, 61)]
OBJECT_PIXEL = (41, 32)


def render(**factors: object) -> np.ndarray:
    """Render the broadcast of ``factors`` over ``BASE``."""
    n = max(np.size(v) for v in factors.values()) if factors else 1
    args = {k: np.broadcast_to(np.asarray(factors.get(k, v), float), (n,)) for k, v in BASE.items()}
    return render_scenes(**args)


def grid(**fixed: object) -> dict[str, np.ndarray]:
    """Every (shape, scale, orientation) geometry, other factors fixed."""
    shape, scale, orientation = (a.reshape(-1) for a in np.meshgrid(range(4), SCALES, ORIENTATIONS))
    return {**fixed, "shape": shape, "scale": scale, "orientation": orientation}


def hue_of(rgb: np.ndarray) -> float:
    return colorsys.rgb_to_hsv(*(np.asarray(rgb, float) / 255))[0]


def hue_distance(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    d = np.abs(np.asarray(a) - np.asarray(b)) % 1.0
    return np.minimum(d, 1.0 - d)


def object_mask(images: np.ndarray, hue: float = BASE["object_hue"]) -> np.ndarray:
    """Pixels showing the object, recognised by its hue (floor and wall hues differ)."""
    hsv = rgb_to_hsv(images / 255.0)
    return (hue_distance(hsv[..., 0], hue) < 0.03) & (hsv[..., 1] > 0.5)


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    """Each test ray casts from scratch, so cached maps cannot hide a casting bug."""
    shapes3d_scene._cache.clear()


def test_shape_and_dtype() -> None:
    images = render(shape=[0, 1, 2, 3])
    assert images.shape == (4, 64, 64, 3) and images.dtype == np.uint8
    small = render_scenes(
        *([0.1, 0.2],) * 3, [1.0, 1.0], [0, 2], [0.0, 30.0], size=32, supersample=1
    )
    assert small.shape == (2, 32, 32, 3)
    assert render_scenes(*[np.zeros(0)] * 6).shape == (0, 64, 64, 3)


def test_deterministic_with_and_without_cache() -> None:
    factors = grid(floor_hue=0.2, wall_hue=0.7, object_hue=0.9)
    first = render(**factors)
    cached = render(**factors)
    shapes3d_scene._cache.clear()
    shapes3d_scene._view.cache_clear()
    np.testing.assert_array_equal(first, cached)
    np.testing.assert_array_equal(first, render(**factors))


def test_batch_chunking_does_not_change_images(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.RandomState(0)
    factors = {name: rng.choice(values, 40) for name, values in VALUES.items()}
    whole = render(**factors)
    shapes3d_scene._cache.clear()
    monkeypatch.setattr(shapes3d_scene, "_IMAGES_PER_CHUNK", 7)
    monkeypatch.setattr(shapes3d_scene, "_RAYS_PER_CHUNK", 3 * 128 * 128)
    np.testing.assert_array_equal(whole, render(**factors))


@pytest.mark.parametrize("factor", FACTORS)
def test_every_value_of_every_factor_changes_the_image(factor: str) -> None:
    images = render(**{factor: VALUES[factor]})
    flat = images.reshape(len(images), -1).astype(int)
    differ = np.abs(flat[:, None] - flat[None]).max(axis=2)
    off_diagonal = ~np.eye(len(images), dtype=bool)
    assert (differ[off_diagonal] > 20).all(), f"two values of {factor} render alike"


def test_all_480_geometries_are_distinct() -> None:
    images = render(**grid())
    assert len({image.tobytes() for image in images}) == 480


@pytest.mark.parametrize("seed", range(3))
def test_surfaces_take_their_hue(seed: int) -> None:
    rng = np.random.RandomState(seed)
    factors = grid(**{name: rng.choice(HUES, 480) for name in FACTORS[:3]})
    images = render(**factors)
    for pixels, name in [(FLOOR_PIXELS, "floor_hue"), (WALL_PIXELS, "wall_hue")]:
        for row, col in pixels:
            hues = [hue_of(image[row, col]) for image in images]
            assert hue_distance(hues, factors[name]).max() < 0.01, (name, row, col)
    hues = [hue_of(image[OBJECT_PIXEL]) for image in images]
    assert hue_distance(hues, factors["object_hue"]).max() < 0.01


def test_larger_scale_shows_more_object() -> None:
    for shape in range(4):
        for orientation in (-30.0, 0.0, 17.0):
            counts = object_mask(render(scale=SCALES, shape=shape, orientation=orientation))
            counts = counts.sum(axis=(1, 2))
            assert (np.diff(counts) > 0).all(), (shape, orientation, counts)


def test_object_stays_in_view() -> None:
    shape, orientation = np.repeat(range(4), 15), np.tile(ORIENTATIONS, 4)
    mask = object_mask(render(shape=shape, orientation=orientation, scale=SCALES[-1])).any(axis=0)
    rows, cols = np.nonzero(mask)
    assert rows.min() > 4 and rows.max() < 59 and cols.min() > 4 and cols.max() < 59


def test_cube_rotates_with_orientation() -> None:
    left, centre, right = render(shape=0, orientation=[-30.0, 0.0, 30.0])
    assert np.abs(left.astype(int) - right.astype(int)).max() > 50
    masks = object_mask(np.stack([left, centre, right]))
    # The silhouette changes, not only the walls behind it.
    assert (masks[0] != masks[1]).sum() > 10 and (masks[1] != masks[2]).sum() > 10
    # Visible faces are shaded differently from each other: it is a solid, not a flat patch.
    values = rgb_to_hsv(centre[masks[1]] / 255.0)[:, 2]
    assert values.max() - values.min() > 0.15


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"scale": [1.0, 1.0]}, "same length"),
        ({"shape": [4]}, "shape must be an integer in 0..3"),
        ({"shape": [1.5]}, "shape must be an integer in 0..3"),
        ({"shape": [-1]}, "shape must be an integer in 0..3"),
        ({"orientation": [[0.0]]}, "orientation must be a 1-D array"),
        ({"floor_hue": [np.nan]}, "floor_hue must be finite"),
        ({"scale": [0.0]}, "scale must be positive"),
        ({"supersample": 0}, "size and supersample"),
        ({"size": 0}, "size and supersample"),
    ],
)
def test_invalid_inputs_raise(change: dict, message: str) -> None:
    args = {name: [value] for name, value in BASE.items()} | change
    with pytest.raises(ValueError, match=message):
        render_scenes(**args)

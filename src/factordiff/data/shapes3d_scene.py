"""Procedural DeepMind 3D Shapes scenes (Burgess & Kim, 2018), ray cast in numpy.

Renders the scene of ``3dshapes.h5`` from its six published factor values, so the dataset is
available offline with exact ground truth: one object standing on the floor in front of the
corner of a room, seen by a camera that orbits the object (``orientation``) and looks
slightly down. The light is fixed in the room, so walls, floor and the object's faces get
different Lambertian brightness and the object casts a soft shadow on the floor.

Geometry and colour are separable: for Lambertian surfaces a pixel is
``floor_map * floor_rgb + wall_map * wall_rgb + object_map * object_rgb``, where the maps
(shading summed over the anti-aliasing rays) depend only on ``(shape, scale, orientation)``.
Only those 480 geometries of the published grid are ray cast (each once per batch, and kept
in a small bounded cache across calls); the hues are applied afterwards by a cheap product.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache

import numpy as np

#: Published shape codes of 3dshapes.h5.
SHAPES = ("cube", "cylinder", "sphere", "capsule")

# Scene, in room coordinates: y up, floor y = 0, object standing on the floor at the origin,
# walls are the planes x = _WALL and z = _WALL (their vertical corner is behind the object).
_HALF = 1.0  # half-width of the object at scale 1
_WALL = 4.2
_CAPSULE_RADIUS = 0.72  # capsule radius and height as fractions of the half-width: a pill
_CAPSULE_HEIGHT = 2.5
# Camera: orbits the object's vertical axis; azimuth 45 deg + orientation looks at the corner.
_BASE_AZIMUTH = 45.0
_CAM_DIST = 10.0
_CAM_HEIGHT = 4.3
_TARGET_HEIGHT = 1.9
_FOV = 38.0  # full field of view in degrees
# Lighting: one directional light fixed in the room (towards the light) plus ambient.
_LIGHT = np.array([-0.55, 1.0, -0.9]) / np.linalg.norm([-0.55, 1.0, -0.9])
_AMBIENT = 0.42
_DIFFUSE = 0.6
_LIGHT_SPREAD = 0.07  # angular extent of the light (radians), gives soft shadow edges

_FLOOR, _WALL_A, _WALL_B = 0, 1, 2
_RAYS_PER_CHUNK = 1 << 20  # bounds the working memory of ray casting to ~150 MB
_IMAGES_PER_CHUNK = 512
_CACHE_BYTES = 96 << 20  # the whole 64x64 grid of geometries (480 x 48 KB) fits


def render_scenes(
    floor_hue: np.ndarray,
    wall_hue: np.ndarray,
    object_hue: np.ndarray,
    scale: np.ndarray,
    shape: np.ndarray,
    orientation: np.ndarray,
    size: int = 64,
    supersample: int = 2,
) -> np.ndarray:
    """Render uint8 images (B, size, size, 3) from published 3D Shapes factor values.

    Hues are in [0, 1) (HSV, full saturation and value), ``scale`` around 0.75..1.25,
    ``shape`` in 0..3 (cube, cylinder, sphere, capsule), ``orientation`` in degrees
    (-30..30). ``supersample`` x ``supersample`` rays per pixel are averaged (anti-aliasing).
    """
    hues, scale, shape, orientation = _check_inputs(
        floor_hue, wall_hue, object_hue, scale, shape, orientation, size, supersample
    )
    n = len(scale)
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for start in range(0, n, _IMAGES_PER_CHUNK):
        part = slice(start, start + _IMAGES_PER_CHUNK)
        keys = np.stack([shape[part], scale[part], orientation[part]], axis=1)
        unique, inverse = np.unique(keys, axis=0, return_inverse=True)
        maps = _geometry_maps(unique, size, supersample)[inverse.reshape(-1)]
        colours = _hue_to_rgb(hues[part])  # (b, 3 materials, 3 channels)
        image = np.einsum("bmhw,bmc->bhwc", maps, colours)
        out[part] = np.clip(image * 255.0 + 0.5, 0.0, 255.0).astype(np.uint8)
    return out


def _check_inputs(
    floor_hue: np.ndarray,
    wall_hue: np.ndarray,
    object_hue: np.ndarray,
    scale: np.ndarray,
    shape: np.ndarray,
    orientation: np.ndarray,
    size: int,
    supersample: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fail early with a message naming the bad argument, not deep inside the ray caster."""
    named = {
        "floor_hue": floor_hue,
        "wall_hue": wall_hue,
        "object_hue": object_hue,
        "scale": scale,
        "shape": shape,
        "orientation": orientation,
    }
    arrays = {}
    for name, value in named.items():
        array = np.asarray(value, dtype=np.float64)
        if array.ndim != 1:
            raise ValueError(f"{name} must be a 1-D array, got shape {array.shape}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} must be finite")
        arrays[name] = array
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"all factor arrays must have the same length, got {lengths}")
    shape = arrays["shape"]
    if np.any((shape != np.round(shape)) | (shape < 0) | (shape > len(SHAPES) - 1)):
        raise ValueError(f"shape must be an integer in 0..3 {SHAPES}, got {np.unique(shape)}")
    if np.any(arrays["scale"] <= 0):
        raise ValueError("scale must be positive")
    if int(size) != size or size < 1 or int(supersample) != supersample or supersample < 1:
        raise ValueError(f"size and supersample must be positive integers, got {size}, {supersample}")
    hues = np.stack([arrays["floor_hue"], arrays["wall_hue"], arrays["object_hue"]], axis=1)
    return hues, arrays["scale"], shape.astype(np.int64), arrays["orientation"]


def _hue_to_rgb(hue: np.ndarray) -> np.ndarray:
    """HSV -> RGB at saturation 1 and value 1 (the base colours of 3D Shapes)."""
    h6 = (np.mod(hue, 1.0) * 6.0)[..., None]
    rgb = np.abs(h6 - np.array([3.0, 2.0, 4.0])) * np.array([1.0, -1.0, -1.0])
    return np.clip(rgb + np.array([-1.0, 2.0, 2.0]), 0.0, 1.0).astype(np.float32)


# --- geometry maps: the ray casting, cached per (shape, scale, orientation) -------------------
_cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
_cache_lock = threading.Lock()


def _geometry_maps(keys: np.ndarray, size: int, supersample: int) -> np.ndarray:
    """(K, 3 materials, size, size) shading maps for unique (shape, scale, orientation) rows."""
    maps = np.empty((len(keys), 3, size, size), dtype=np.float32)
    cache_keys = [(size, supersample, int(k[0]), float(k[1]), float(k[2])) for k in keys]
    missing = []
    with _cache_lock:
        for i, key in enumerate(cache_keys):
            if key in _cache:
                _cache.move_to_end(key)
                maps[i] = _cache[key]
            else:
                missing.append(i)
    per_chunk = max(1, _RAYS_PER_CHUNK // (size * supersample) ** 2)
    for start in range(0, len(missing), per_chunk):
        rows = np.asarray(missing[start : start + per_chunk])
        maps[rows] = _cast(keys[rows, 0].astype(np.int64), keys[rows, 1], keys[rows, 2], size, supersample)
    with _cache_lock:
        for i in missing:
            _cache[cache_keys[i]] = maps[i].copy()
        while len(_cache) * maps[0].nbytes > _CACHE_BYTES:
            _cache.popitem(last=False)
    return maps

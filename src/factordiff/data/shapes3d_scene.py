"""Procedural DeepMind 3D Shapes scenes (Burgess & Kim, 2018), ray cast in numpy.

Renders the scene of ``3dshapes.h5`` from its six published factor values, so the dataset is
available offline with exact ground truth: one object standing on the floor in front of the
corner of a room, seen by a camera that orbits the object (``orientation``) and looks
slightly down. The light is fixed in the room, so walls, floor and the object's faces get
different Lambertian brightness and the object casts a soft shadow on the floor.

Geometry and colour are separable: for Lambertian surfaces a pixel is
``floor_map * floor_rgb + wall_map * wall_rgb + object_map * object_rgb``, where the maps
(shading averaged over the anti-aliasing rays) depend only on ``(shape, scale, orientation)``.
So each distinct geometry (480 on the published grid) is ray cast once per batch and kept in
a bounded cache across calls, and the 1000 hue combinations cost only that weighted sum.
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
_HALF = 0.9  # half-width of the object at scale 1
_WALL = 4.0
_CAPSULE_RADIUS = 0.72  # capsule radius and height as fractions of the half-width: a pill
_CAPSULE_HEIGHT = 2.5
# Camera: orbits the object's vertical axis; azimuth 45 deg + orientation looks at the corner.
_BASE_AZIMUTH = 45.0
_CAM_DIST = 10.0
_CAM_HEIGHT = 4.5
_TARGET_HEIGHT = 1.7
_FOV = 34.0  # full field of view in degrees
# Lighting: one directional light fixed in the room (towards the light) plus ambient.
_LIGHT = np.array([-0.55, 1.0, -0.9]) / np.linalg.norm([-0.55, 1.0, -0.9])
_AMBIENT = 0.42
_DIFFUSE = 0.6
_LIGHT_SPREAD = 0.07  # angular extent of the light (radians), gives soft shadow edges

_FLOOR = 0  # room surface codes: 0 floor, 1 wall x = _WALL, 2 wall z = _WALL
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
        raise ValueError(
            f"size and supersample must be positive integers, got {size}, {supersample}"
        )
    hues = np.stack([arrays["floor_hue"], arrays["wall_hue"], arrays["object_hue"]], axis=1)
    return hues, arrays["scale"], shape.astype(np.int64), arrays["orientation"]


def _hue_to_rgb(hue: np.ndarray) -> np.ndarray:
    """HSV -> RGB at saturation 1 and value 1 (the base colours of 3D Shapes)."""
    h6 = (np.mod(hue, 1.0) * 6.0)[..., None]
    rgb = np.abs(h6 - np.array([3.0, 2.0, 4.0])) * np.array([1.0, -1.0, -1.0])
    return np.clip(rgb + np.array([-1.0, 2.0, 2.0]), 0.0, 1.0).astype(np.float32)


# --- geometry maps: the ray casting, cached per (shape, scale, orientation) -------------------
_cache: OrderedDict[tuple[int, int, int, float, float], np.ndarray] = OrderedDict()
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
        maps[rows] = _cast(
            keys[rows, 0].astype(np.int64), keys[rows, 1], keys[rows, 2], size, supersample
        )
    with _cache_lock:
        for i in missing:
            _cache[cache_keys[i]] = maps[i].copy()
        while sum(m.nbytes for m in _cache.values()) > _CACHE_BYTES:
            _cache.popitem(last=False)
    return maps


def _cast(
    shape: np.ndarray, scale: np.ndarray, orientation: np.ndarray, size: int, supersample: int
) -> np.ndarray:
    """Ray cast K geometries: (K, 3, size, size) shading of floor, wall and object rays."""
    views = [_view(float(o), size, supersample) for o in orientation]
    origin = np.stack([v[0] for v in views])  # (K, 3)
    dirs = np.stack([v[1] for v in views])  # (K, P, 3)
    material = np.stack([v[2] for v in views])  # (K, P)
    lambert = np.stack([v[3] for v in views])
    points = np.stack([v[4] for v in views])
    half = (_HALF * scale).astype(np.float32)
    centre = np.zeros((len(shape), 3), dtype=np.float32)
    centre[:, 1] = _BOUND_CENTRE[shape] * half
    radius = _BOUND_RADIUS[shape] * half

    # Primary rays: an exact hit test only where the ray meets the object's bounding sphere.
    oc = origin - centre
    near = _meets_sphere(
        np.einsum("kpc,kc->kp", dirs, oc), np.einsum("kc,kc->k", oc, oc)[:, None], radius
    )
    k, p = np.nonzero(near)
    t, normal = _intersect(shape[k], half[k], origin[k], dirs[k, p])
    hit = np.isfinite(t)
    k, p = k[hit], p[hit]
    covered = np.zeros(material.shape, dtype=bool)
    covered[k, p] = True
    lit_object = np.zeros(material.shape, dtype=np.float32)
    lit_object[k, p] = _AMBIENT + _DIFFUSE * np.maximum(normal[hit] @ _LIGHT_F32, 0.0)

    # Shadow rays from the visible floor and walls towards (a point of) the light.
    lights = _light_samples(size, supersample)  # (P, 3)
    oc = points - centre[:, None, :]
    near = _meets_sphere(
        np.einsum("kpc,pc->kp", oc, lights), np.einsum("kpc,kpc->kp", oc, oc), radius
    )
    k, p = np.nonzero(near & ~covered)
    t, _ = _intersect(shape[k], half[k], points[k, p], lights[p])
    shadowed = np.zeros(material.shape, dtype=bool)
    shadowed[k[np.isfinite(t)], p[np.isfinite(t)]] = True
    lit_room = np.where(covered, 0.0, _AMBIENT + _DIFFUSE * lambert * ~shadowed)

    maps = np.stack(
        [
            np.where(material == _FLOOR, lit_room, 0.0),
            np.where(material == _FLOOR, 0.0, lit_room),
            lit_object,
        ],
        axis=1,
    ).astype(np.float32)
    maps = maps.reshape(len(shape), 3, size, supersample, size, supersample)
    return maps.mean(axis=(3, 5))


def _meets_sphere(b: np.ndarray, oc2: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Rays o + t d (|d| = 1, b = d.(o - c), oc2 = |o - c|^2) that meet a sphere at t > 0."""
    q = oc2 - (radius * radius)[:, None]
    return (q < 0) | ((b < 0) & (b * b > q))


@lru_cache(maxsize=64)
def _view(
    orientation: float, size: int, supersample: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Camera rays and their room hits for one orientation (shared by all 32 geometries).

    Returns the camera origin (3,), ray directions (P, 3), the room surface hit (P,),
    its Lambert factor max(n.l, 0) (P,) and the hit points (P, 3), in room coordinates.
    """
    azimuth = np.radians(_BASE_AZIMUTH + orientation)
    across = np.array([np.sin(azimuth), 0.0, np.cos(azimuth)])
    origin = np.array([0.0, _CAM_HEIGHT, 0.0]) - _CAM_DIST * across
    forward = np.array([0.0, _TARGET_HEIGHT, 0.0]) - origin
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    n = size * supersample
    grid = ((np.arange(n) + 0.5) / n * 2.0 - 1.0) * np.tan(np.radians(_FOV / 2))
    u, v = np.meshgrid(grid, -grid)  # columns left to right, rows top to bottom
    dirs = forward + u.reshape(-1, 1) * right + v.reshape(-1, 1) * up
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        t = np.stack(
            [
                np.where(dirs[:, 1] < 0, -origin[1] / dirs[:, 1], np.inf),
                np.where(dirs[:, 0] > 0, (_WALL - origin[0]) / dirs[:, 0], np.inf),
                np.where(dirs[:, 2] > 0, (_WALL - origin[2]) / dirs[:, 2], np.inf),
            ]
        )
    material = t.argmin(axis=0)
    points = origin + t.min(axis=0)[:, None] * dirs
    normals = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    lambert = np.maximum(normals @ _LIGHT, 0.0)[material]
    out = (origin, dirs, material, lambert, points)
    out = tuple(np.asarray(a, dtype=np.float32 if a.dtype.kind == "f" else a.dtype) for a in out)
    for array in out:
        array.flags.writeable = False
    return out


@lru_cache(maxsize=16)
def _light_samples(size: int, supersample: int) -> np.ndarray:
    """Per-ray direction to a point of the area light: each sub-pixel ray sees another point."""
    side = np.cross(_LIGHT, [0.0, 1.0, 0.0])
    side /= np.linalg.norm(side)
    lift = np.cross(side, _LIGHT)
    offset = ((np.arange(supersample) + 0.5) / supersample - 0.5) * _LIGHT_SPREAD
    a, b = np.meshgrid(offset, offset[::-1], indexing="ij")  # rows, columns of one pixel
    samples = _LIGHT + a.reshape(-1, 1) * lift + b.reshape(-1, 1) * side
    samples /= np.linalg.norm(samples, axis=1, keepdims=True)
    index = (np.arange(supersample)[:, None] * supersample + np.arange(supersample)).reshape(
        1, supersample, 1, supersample
    )
    index = np.broadcast_to(index, (size, supersample, size, supersample)).reshape(-1)
    out = samples[index].astype(np.float32)
    out.flags.writeable = False
    return out


# --- analytic ray/object intersections, in room coordinates ---------------------------------
# Each returns (t, normal) for rays o + t d with unit d; t = inf where the ray misses.
Hits = tuple[np.ndarray, np.ndarray]


def _intersect(shape: np.ndarray, half: np.ndarray, o: np.ndarray, d: np.ndarray) -> Hits:
    """Nearest hit of each ray with its own object (shape code and half-width per ray)."""
    t = np.full(len(shape), np.inf, dtype=np.float32)
    normal = np.zeros((len(shape), 3), dtype=np.float32)
    for code, intersect in enumerate(_INTERSECTORS):
        rows = np.flatnonzero(shape == code)
        if rows.size:
            t[rows], normal[rows] = intersect(o[rows], d[rows], half[rows])
    return t, normal


def _nearest(*hits: Hits) -> Hits:
    """Nearest of several hits: the entry into a union of convex parts seen from outside."""
    ts = np.stack([t for t, _ in hits])
    first = ts.argmin(axis=0)
    normals = np.stack([n for _, n in hits])
    rows = np.arange(ts.shape[1])
    return ts[first, rows], normals[first, rows]


def _box(o: np.ndarray, d: np.ndarray, h: np.ndarray) -> Hits:
    """Cube of half-width h on the floor, faces aligned with the walls (slab method)."""
    low = np.stack([-h, np.zeros_like(h), -h], axis=1)
    high = np.stack([h, 2 * h, h], axis=1)
    step = np.where(d == 0, np.float32(1e-12), d)
    t1, t2 = (low - o) / step, (high - o) / step
    near = np.minimum(t1, t2)
    axis = near.argmax(axis=1)
    rows = np.arange(len(h))
    t_in, t_out = near[rows, axis], np.maximum(t1, t2).min(axis=1)
    normal = np.zeros_like(o)
    normal[rows, axis] = -np.sign(d[rows, axis])
    return np.where((t_in <= t_out) & (t_in > 0), t_in, np.inf), normal


def _tube(o: np.ndarray, d: np.ndarray, r: np.ndarray, y0: np.ndarray, y1: np.ndarray) -> Hits:
    """Side of the vertical cylinder of radius r around the y axis, between heights y0, y1."""
    a = d[:, 0] ** 2 + d[:, 2] ** 2
    b = o[:, 0] * d[:, 0] + o[:, 2] * d[:, 2]
    disc = b * b - a * (o[:, 0] ** 2 + o[:, 2] ** 2 - r * r)
    t = (-b - np.sqrt(np.maximum(disc, 0))) / np.maximum(a, np.float32(1e-12))
    y = o[:, 1] + t * d[:, 1]
    hit = (disc > 0) & (t > 0) & (y >= y0) & (y <= y1)
    normal = (o + t[:, None] * d) * np.array([1, 0, 1], dtype=np.float32) / r[:, None]
    return np.where(hit, t, np.inf), normal


def _lid(o: np.ndarray, d: np.ndarray, r: np.ndarray, y: np.ndarray) -> Hits:
    """Upward-facing disc of radius r at height y (a cylinder's top)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (y - o[:, 1]) / d[:, 1]
    p = o + t[:, None] * d
    hit = (t > 0) & (p[:, 0] ** 2 + p[:, 2] ** 2 <= r * r)
    normal = np.broadcast_to(np.array([0, 1, 0], dtype=np.float32), o.shape)
    return np.where(hit, t, np.inf), normal


def _ball(o: np.ndarray, d: np.ndarray, r: np.ndarray, y: np.ndarray) -> Hits:
    """Sphere of radius r centred on the y axis at height y."""
    oc = o - np.stack([np.zeros_like(y), y, np.zeros_like(y)], axis=1)
    b = np.einsum("nc,nc->n", d, oc)
    disc = b * b - np.einsum("nc,nc->n", oc, oc) + r * r
    t = -b - np.sqrt(np.maximum(disc, 0))
    normal = (oc + t[:, None] * d) / r[:, None]
    return np.where((disc > 0) & (t > 0), t, np.inf), normal


def _cylinder(o: np.ndarray, d: np.ndarray, h: np.ndarray) -> Hits:
    return _nearest(_tube(o, d, h, np.zeros_like(h), 2 * h), _lid(o, d, h, 2 * h))


def _sphere(o: np.ndarray, d: np.ndarray, h: np.ndarray) -> Hits:
    return _ball(o, d, h, h)


def _capsule(o: np.ndarray, d: np.ndarray, h: np.ndarray) -> Hits:
    r = np.float32(_CAPSULE_RADIUS) * h
    top = np.float32(_CAPSULE_HEIGHT) * h - r
    return _nearest(_tube(o, d, r, r, top), _ball(o, d, r, r), _ball(o, d, r, top))


_INTERSECTORS: tuple[Callable[[np.ndarray, np.ndarray, np.ndarray], Hits], ...] = (
    _box,
    _cylinder,
    _sphere,
    _capsule,
)
# Bounding sphere of each shape (centre height and radius, in half-widths).
_BOUND_CENTRE = np.array([1.0, 1.0, 1.0, _CAPSULE_HEIGHT / 2], dtype=np.float32)
_BOUND_RADIUS = np.array([3**0.5, 2**0.5, 1.0, _CAPSULE_HEIGHT / 2], dtype=np.float32) * 1.001
_LIGHT_F32 = _LIGHT.astype(np.float32)

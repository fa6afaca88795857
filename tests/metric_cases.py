"""Deterministic inputs for the known-answer metric tests.

Two kinds of input, both pure functions of fixed seeds (numpy ``RandomState`` only, whose
streams numpy keeps frozen), so the numbers in ``fixtures/reference_metrics.json`` can be
reproduced anywhere:

* Array cases, ``case(key) -> (codes_train, factors_train, codes_test, factors_test)``:
  codes float64 (n, n_codes), factors int64 (n, n_factors), one row per point.
  ``key`` is ``"<name>/<size>"`` (a bare name means ``"<name>/full"``); see ``CASE_KEYS``.

  - ``disentangled``: the six Shapes3D factors (sizes 10, 10, 10, 8, 4, 15), each encoded
    by exactly one code (scaled, some with flipped sign, small Gaussian noise) plus four
    pure-noise codes; ten codes in all, the factor codes at ``DISENTANGLED_CODE_OF_FACTOR``.
  - ``mixed``: the same factors through the fixed linear mixing ``MIXING`` (some codes
    mix two or three factors), a nonlinearity on three codes and Gaussian noise.
  - ``entangled``: the ``disentangled`` codes times a fixed random rotation (10 x 10).
  - ``constant_code``: ``disentangled`` with the noise code ``CONSTANT_CODE`` set to a
    constant.
  - ``small``: two factors (2 and 3 classes), three codes, 24 train / 12 test points,
    every factor combination equally often: small enough to check by hand.

  Sizes (train, test): ``full`` 10000 / 5000 (the protocol of disentanglement_lib's
  study configs) and ``reduced`` 1000 / 500 (cheap enough for the tree-based DCI).

* A tiny ground-truth dataset for the sampling metrics (FactorVAE, beta-VAE, and the
  sampling entry points of the others): ``MetricTinyGrid`` (factors of sizes 4, 5, 3, 6;
  a 1 x 4 image whose pixel k is factor k) with the representation functions in
  ``REPRESENTATIONS``. Each maps uint8 images (B, 1, 4, 1) to float64 codes (B, n_codes)
  row by row, with pseudo-noise hashed from the pixels, so a representation is a pure
  function of the image and consumes no randomness.
"""

from __future__ import annotations

import numpy as np

from factordiff.data.base import GridDataset

# --- array cases -------------------------------------------------------------------------

FACTOR_SIZES = (10, 10, 10, 8, 4, 15)
N_CODES = 10
SIZES = {"full": (10000, 5000), "reduced": (1000, 500)}
CASES = ("disentangled", "mixed", "entangled", "constant_code", "small")
CASE_KEYS = tuple(f"{name}/{size}" for name in CASES[:-1] for size in SIZES) + ("small",)

SEEDS = {"disentangled": 101, "mixed": 202, "entangled": 101, "constant_code": 101, "small": 505}
ROTATION_SEED = 303

#: Code column that carries each factor in ``disentangled`` (and its variants).
DISENTANGLED_CODE_OF_FACTOR = (3, 0, 8, 1, 6, 4)
#: Scale (and sign) of each factor's code in ``disentangled``.
DISENTANGLED_SCALES = (1.0, -2.0, 0.5, 3.0, -1.0, 1.5)
DISENTANGLED_NOISE = 0.02
#: The noise code that ``constant_code`` replaces by ``CONSTANT_VALUE``.
CONSTANT_CODE = 5
CONSTANT_VALUE = 0.25

#: Factor (rows) -> code (columns) weights of ``mixed``, applied to factors scaled to
#: [-1, 1]; codes 7..9 carry no factor.
MIXING = np.array(
    [
        # c0   c1   c2    c3   c4   c5   c6   c7   c8   c9
        [1.0, 0.0, -0.3, 0.0, 0.0, 0.0, 0.3, 0.0, 0.0, 0.0],  # factor 0
        [0.0, 0.8, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # factor 1
        [0.0, 0.6, 1.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # factor 2
        [0.0, 0.0, 0.0, 1.0, 0.0, 0.7, 0.0, 0.0, 0.0, 0.0],  # factor 3
        [0.0, 0.0, 0.0, 0.5, 1.5, 0.0, 0.0, 0.0, 0.0, 0.0],  # factor 4
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.7, 0.3, 0.0, 0.0, 0.0],  # factor 5
    ]
)
#: Noise standard deviation of each ``mixed`` code.
MIXED_NOISE = np.array([0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.3, 0.5, 0.5, 0.5])


def _sample_factors(rs: np.random.RandomState, sizes: tuple[int, ...], n: int) -> np.ndarray:
    """One ``randint`` per factor, in factor order (disentanglement_lib's order)."""
    out = np.zeros((n, len(sizes)), dtype=np.int64)
    for i, size in enumerate(sizes):
        out[:, i] = rs.randint(size, size=n)
    return out


def _unit(factors: np.ndarray, sizes: tuple[int, ...]) -> np.ndarray:
    """Factor classes scaled to [0, 1]."""
    return factors / (np.asarray(sizes, dtype=np.float64) - 1.0)


def _disentangled_codes(rs: np.random.RandomState, factors: np.ndarray) -> np.ndarray:
    n = factors.shape[0]
    codes = rs.randn(n, N_CODES)  # the noise codes keep unit variance
    u = _unit(factors, FACTOR_SIZES) - 0.5
    factor_noise = DISENTANGLED_NOISE * rs.randn(n, len(FACTOR_SIZES))
    for j, col in enumerate(DISENTANGLED_CODE_OF_FACTOR):
        codes[:, col] = DISENTANGLED_SCALES[j] * (u[:, j] + factor_noise[:, j])
    return codes


def _mixed_codes(rs: np.random.RandomState, factors: np.ndarray) -> np.ndarray:
    z = 2.0 * _unit(factors, FACTOR_SIZES) - 1.0
    linear = z @ MIXING
    linear[:, 2] = np.tanh(linear[:, 2])
    linear[:, 3] = linear[:, 3] ** 3
    linear[:, 4] = np.sin(linear[:, 4])
    return linear + MIXED_NOISE * rs.randn(factors.shape[0], N_CODES)


def rotation() -> np.ndarray:
    """The fixed random rotation (N_CODES x N_CODES, orthogonal) of ``entangled``."""
    rs = np.random.RandomState(ROTATION_SEED)
    q, r = np.linalg.qr(rs.randn(N_CODES, N_CODES))
    return q * np.sign(np.diag(r))


def _split(name: str, rs: np.random.RandomState, n: int) -> tuple[np.ndarray, np.ndarray]:
    factors = _sample_factors(rs, FACTOR_SIZES, n)
    if name == "mixed":
        return _mixed_codes(rs, factors), factors
    codes = _disentangled_codes(rs, factors)
    if name == "entangled":
        codes = codes @ rotation()
    elif name == "constant_code":
        codes[:, CONSTANT_CODE] = CONSTANT_VALUE
    return codes, factors


def _small() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rs = np.random.RandomState(SEEDS["small"])
    grid = np.array([[a, b] for a in range(2) for b in range(3)], dtype=np.int64)
    out = []
    for reps in (4, 2):
        factors = np.tile(grid, (reps, 1))[rs.permutation(6 * reps)]
        noise = rs.randn(len(factors), 3)
        codes = np.stack(
            [
                factors[:, 0] + 0.1 * noise[:, 0],
                factors[:, 1] + 0.5 * factors[:, 0] + 0.1 * noise[:, 1],
                noise[:, 2],
            ],
            axis=1,
        )
        out += [codes, factors]
    return out[0], out[1], out[2], out[3]


def case(key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(codes_train, factors_train, codes_test, factors_test)`` of a case.

    ``key`` is one of ``CASE_KEYS`` (``"mixed/reduced"``, ``"small"``, ...); a bare case
    name means its ``full`` size. Train and test are drawn one after the other from the
    case's own ``RandomState``, so every call returns the same arrays.
    """
    name, _, size = key.partition("/")
    if name == "small" and not size:
        return _small()
    size = size or "full"
    if name not in CASES[:-1] or size not in SIZES:
        raise KeyError(f"unknown metric case {key!r}; known: {', '.join(CASE_KEYS)}")
    n_train, n_test = SIZES[size]
    rs = np.random.RandomState(SEEDS[name])
    codes_train, factors_train = _split(name, rs, n_train)
    codes_test, factors_test = _split(name, rs, n_test)
    return codes_train, factors_train, codes_test, factors_test


# --- a tiny ground-truth dataset and representations for the sampling metrics -----------


class MetricTinyGrid(GridDataset):
    """4 x 5 x 3 x 6 = 360 images of 1 x 4 pixels; pixel k holds the class of factor k."""

    name = "metric_tiny"
    factor_names = ("a", "b", "c", "d")
    factor_sizes = (4, 5, 3, 6)
    image_shape = (1, 4, 1)

    def _render(self, factors: np.ndarray) -> np.ndarray:
        return factors.astype(np.uint8).reshape(len(factors), *self.image_shape)


TINY_SIZES = MetricTinyGrid.factor_sizes
_MASK32 = np.uint64(0xFFFFFFFF)


def decode_factors(images: np.ndarray) -> np.ndarray:
    """Factor classes (B, 4) back from ``MetricTinyGrid`` images (B, 1, 4, 1)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != MetricTinyGrid.image_shape:
        raise ValueError(f"expected images (B, 1, 4, 1), got shape {images.shape}")
    return np.rint(images.reshape(len(images), 4)).astype(np.int64)


def pseudo_noise(factors: np.ndarray, stream: int) -> np.ndarray:
    """Deterministic noise in [-0.5, 0.5) per image, a 32-bit integer hash of the factors.

    Integer arithmetic only, so it is bit-identical on every platform.
    """
    idx = np.ravel_multi_index(tuple(factors.T), TINY_SIZES).astype(np.uint64)
    h = (idx * np.uint64(2654435761) + np.uint64(97531 * (stream + 1))) & _MASK32
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(2246822519)) & _MASK32
    h ^= h >> np.uint64(13)
    h = (h * np.uint64(3266489917)) & _MASK32
    h ^= h >> np.uint64(16)
    return h.astype(np.float64) / 2.0**32 - 0.5


def represent_disentangled(images: np.ndarray) -> np.ndarray:
    """One code per factor (scaled, one sign flipped), no noise: (B, 4)."""
    u = _unit(decode_factors(images), TINY_SIZES)
    return u * np.array([1.0, 2.0, -1.0, 0.5])


def represent_mixed(images: np.ndarray) -> np.ndarray:
    """Seven codes: mixing, a nonlinearity, code 3 dead (always 0), code 5 pure noise."""
    f = decode_factors(images)
    a, b, c, d = _unit(f, TINY_SIZES).T
    e = [pseudo_noise(f, k) for k in range(7)]
    return np.stack(
        [
            a + 0.05 * e[0],
            b + 0.4 * c + 0.05 * e[1],
            np.tanh(2.0 * (c - 0.5)) + 0.05 * e[2],
            np.zeros_like(a),
            d - 0.3 * a + 0.05 * e[4],
            0.3 * e[5],
            0.5 * b + 0.5 * d + 0.1 * e[6],
        ],
        axis=1,
    )


def represent_lowscale(images: np.ndarray) -> np.ndarray:
    """Five codes; code 1 carries factor b at a tiny scale (std ~0.007, below FactorVAE's
    0.05 prune threshold), code 4 is pure noise."""
    f = decode_factors(images)
    a, b, c, d = _unit(f, TINY_SIZES).T
    e = [pseudo_noise(f, k) for k in range(5)]
    return np.stack(
        [
            a + 0.05 * e[0],
            0.02 * b + 0.002 * e[1],
            c + 0.05 * e[2],
            d + 0.05 * e[3],
            0.5 * e[4],
        ],
        axis=1,
    )


def represent_entangled(images: np.ndarray) -> np.ndarray:
    """Four codes: factors a and b rotated together, c and d mixed, all under heavy
    pseudo-noise, so that beta-VAE and FactorVAE accuracies are far from 1."""
    f = decode_factors(images)
    a, b, c, d = _unit(f, TINY_SIZES).T
    cos, sin = np.cos(0.6), np.sin(0.6)
    e = [pseudo_noise(f, k) for k in range(4)]
    return np.stack(
        [
            cos * a + sin * b + 2.0 * e[0],
            -sin * a + cos * b + 2.0 * e[1],
            c + 2.0 * e[2],
            0.6 * d + 0.4 * c + 2.0 * e[3],
        ],
        axis=1,
    )


REPRESENTATIONS = {
    "disentangled": represent_disentangled,
    "mixed": represent_mixed,
    "lowscale": represent_lowscale,
    "entangled": represent_entangled,
}


def quantised(codes: np.ndarray, step: float = 0.5) -> np.ndarray:
    """Codes rounded to multiples of ``step``: discrete latents for InfoMEC's discrete mode."""
    return np.round(codes / step) * step


def udr_runs() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Four runs' codes of the same 1000 points and their per-unit KL, for UDR: the factors
    themselves; permuted, sign-flipped and scaled; randomly rotated (entangled); squashed,
    noisier, with its last unit inactive (KL 0.001)."""
    rs = np.random.RandomState(7)
    n, d = 1000, 5
    f = rs.uniform(-1, 1, (n, d))
    perm, sign = np.array([3, 0, 4, 1, 2]), np.array([1, -1, 1, 1, -1])
    q, _ = np.linalg.qr(rs.normal(size=(d, d)))
    runs = [
        f + 0.05 * rs.normal(size=(n, d)),
        (f[:, perm] * sign) * 3.0 + 0.05 * rs.normal(size=(n, d)),
        f @ q + 0.05 * rs.normal(size=(n, d)),
        np.tanh(2 * f) + 0.2 * rs.normal(size=(n, d)),
    ]
    kl = [np.ones(d), np.ones(d), np.ones(d), np.array([1.0, 1.0, 1.0, 1.0, 0.001])]
    return runs, kl

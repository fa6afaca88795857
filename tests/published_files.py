"""Writers of small stand-ins for the published dataset files, in their exact layout.

Same keys, dtypes, shapes and containers as the real downloads, so the loaders run the
code path a user's file takes. Grid sizes are fixed by the published files, so the image
arrays have their full counts; they stay cheap because almost every image is zero:

* dSprites: a compressed ``.npz`` (as published) streamed through ``zipfile`` at
  compression level 1: 3 GB of mostly zeros become ~15 MB in about 3 s.
* Shapes3D: a chunked, gzip-compressed HDF5 file where only the marker images are
  written; HDF5 does not store unwritten chunks and reads them as the fill value 0.
* MPI3D: a stored (uncompressed) ``.npz`` of 12.7 GB written as a *sparse* file: the zip
  headers, the marker images and a correct CRC-32 are written, the zeros are holes that
  take no disk space or time. The file is a valid zip (``zipfile`` opens it).
* Cars3D: 183 MATLAB files whose ``im`` encodes (object, azimuth, elevation) in the
  colour channels, so the factor order can be checked after resizing.
* CelebA: a few JPEGs plus the attribute and partition files.

A *marker* is a pseudo-random image seeded by its dataset index, so a test can recompute
what must come back at known factors.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

DSPRITES_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
DSPRITES_LATENT_SIZES = (1, 3, 6, 40, 32, 32)
SHAPES3D_SIZES = (10, 10, 10, 8, 4, 15)
MPI3D_SIZES = (6, 6, 2, 3, 3, 40, 40)
CARS3D_MESH = (128, 128, 3, 24, 4)

#: Factors (without dSprites' colour) at which markers are written.
DSPRITES_MARKERS = ((0, 0, 0, 0, 0), (2, 5, 39, 31, 31), (1, 3, 17, 5, 29), (0, 4, 2, 30, 1))
SHAPES3D_MARKERS = (
    (0, 0, 0, 0, 0, 0),
    (9, 9, 9, 7, 3, 14),
    (3, 7, 1, 5, 2, 11),
    (8, 0, 4, 2, 1, 6),
)
MPI3D_MARKERS = ((0, 0, 0, 0, 0, 0, 0), (5, 5, 1, 2, 2, 39, 39), (2, 4, 1, 0, 2, 13, 27))


def c_index(factors: Sequence[int], sizes: Sequence[int]) -> int:
    """C-order index, written out by hand so tests do not trust the code under test."""
    index = 0
    for f, s in zip(factors, sizes, strict=True):
        index = index * s + int(f)
    return index


def marker_image(index: int, shape: Sequence[int], binary: bool = False) -> np.ndarray:
    """The pseudo-random image written at dataset ``index``."""
    rng = np.random.RandomState(index % (2**32))
    return rng.randint(0, 2 if binary else 256, size=tuple(shape)).astype(np.uint8)


def _npy_header(dtype: np.dtype | str, shape: Sequence[int], fortran: bool = False) -> bytes:
    buf = io.BytesIO()
    d = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": fortran}
    d["shape"] = tuple(int(s) for s in shape)
    np.lib.format.write_array_header_1_0(buf, d)
    return buf.getvalue()


# --- dSprites ---------------------------------------------------------------------------
def dsprites_latents() -> tuple[np.ndarray, np.ndarray]:
    """Published ``latents_classes`` (int64) and ``latents_values`` (float64)."""
    classes = np.indices(DSPRITES_LATENT_SIZES).reshape(6, -1).T.astype(np.int64)
    tables = [
        np.ones(1),
        np.arange(1.0, 4.0),
        np.linspace(0.5, 1.0, 6),
        np.linspace(0.0, 2 * np.pi, 40),
        np.linspace(0.0, 1.0, 32),
        np.linspace(0.0, 1.0, 32),
    ]
    values = np.stack([t[classes[:, i]] for i, t in enumerate(tables)], axis=1)
    return classes, values


def write_dsprites(
    path: Path,
    markers: Iterable[Sequence[int]] = DSPRITES_MARKERS,
    *,
    omit: Sequence[str] = (),
    imgs_dtype: str = "uint8",
    imgs_count: int | None = None,
    swap_class_rows: bool = False,
    imgs_value: int = 1,
    imgs_rows: int | None = None,
) -> dict[int, np.ndarray]:
    """Write a dSprites ``.npz``; returns {index: binary image} of the markers written.

    The other arguments make broken files cheaply: ``omit`` leaves out members,
    ``imgs_dtype``/``imgs_count`` change the ``imgs`` header, ``swap_class_rows`` breaks
    the grid order, ``imgs_value`` writes markers with another value than 1, and
    ``imgs_rows`` stops the ``imgs`` data after that many images (0: header only), a
    member whose header promises more than it holds.
    """
    n = int(np.prod(DSPRITES_LATENT_SIZES))
    count = n if imgs_count is None else imgs_count
    written = {}
    for f in markers:
        index = c_index(f, DSPRITES_LATENT_SIZES[1:])
        written[index] = marker_image(index, (64, 64), binary=True) * np.uint8(imgs_value)
    classes, values = dsprites_latents()
    if swap_class_rows:
        classes[[1, 2]] = classes[[2, 1]]
    metadata = np.array(
        {"latents_sizes": np.array(DSPRITES_LATENT_SIZES), "title": "dSprites"}, dtype=object
    )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        if "imgs" not in omit:
            with zf.open("imgs.npy", "w", force_zip64=True) as f:
                f.write(_npy_header(imgs_dtype, (count, 64, 64)))
                rows = count if imgs_rows is None else imgs_rows
                _write_sparse_rows(f, rows, (64, 64), np.dtype(imgs_dtype), written)
        for key, array in (("latents_classes", classes), ("latents_values", values)):
            if key not in omit:
                with zf.open(f"{key}.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, array, allow_pickle=False)
        with zf.open("metadata.npy", "w") as f:
            np.lib.format.write_array(f, metadata, allow_pickle=True)
    return written


def _write_sparse_rows(
    f: io.BufferedIOBase,
    count: int,
    row_shape: tuple[int, ...],
    dtype: np.dtype,
    markers: Mapping[int, np.ndarray],
    rows_per_chunk: int = 8192,
) -> None:
    """Stream ``count`` zero rows with ``markers`` set, one chunk in memory at a time."""
    zero = np.zeros((rows_per_chunk, *row_shape), dtype=dtype)
    zero_bytes = zero.tobytes()
    for start in range(0, count, rows_per_chunk):
        stop = min(count, start + rows_per_chunk)
        inside = [i for i in markers if start <= i < stop]
        if not inside and stop - start == rows_per_chunk:
            f.write(zero_bytes)
            continue
        chunk = np.zeros((stop - start, *row_shape), dtype=dtype)
        for i in inside:
            chunk[i - start] = markers[i]
        f.write(chunk.tobytes())


# --- Shapes3D ---------------------------------------------------------------------------
SHAPES3D_VALUES = (
    np.linspace(0.0, 0.9, 10),
    np.linspace(0.0, 0.9, 10),
    np.linspace(0.0, 0.9, 10),
    np.linspace(0.75, 1.25, 8),
    np.arange(4.0),
    np.linspace(-30.0, 30.0, 15),
)


def write_shapes3d(
    path: Path,
    markers: Iterable[Sequence[int]] = SHAPES3D_MARKERS,
    *,
    factor_sizes: Sequence[int] = SHAPES3D_SIZES,
    omit: Sequence[str] = (),
    images_dtype: str = "uint8",
    labels_dtype: str = "float64",
    images_count: int | None = None,
    shuffle_labels: bool = False,
    fill_all: bool = False,
) -> dict[int, np.ndarray]:
    """Write ``3dshapes.h5``; returns {index: image} of the markers written.

    ``fill_all`` writes every image as a marker (only sensible for small ``factor_sizes``).
    """
    n = int(np.prod(factor_sizes))
    classes = np.indices(factor_sizes).reshape(len(factor_sizes), -1).T
    labels = np.stack([SHAPES3D_VALUES[i][classes[:, i]] for i in range(6)], axis=1)
    if shuffle_labels:
        labels = labels[np.random.RandomState(0).permutation(n)]
    indices = range(n) if fill_all else [c_index(f, factor_sizes) for f in markers]
    written = {i: marker_image(i, (64, 64, 3)) for i in indices}
    with h5py.File(path, "w") as f:
        if "images" not in omit:
            count = n if images_count is None else images_count
            images = f.create_dataset(
                "images",
                shape=(count, 64, 64, 3),
                dtype=images_dtype,
                chunks=(1, 64, 64, 3),
                compression="gzip",
            )
            if fill_all:
                images[:] = np.stack([written[i] for i in range(n)])
            else:
                for i, img in written.items():
                    if i < count:
                        images[i] = img
        if "labels" not in omit:
            f.create_dataset("labels", data=labels.astype(labels_dtype), compression="gzip")
    return written


# --- MPI3D: a sparse stored .npz ---------------------------------------------------------
def _affine_crc_zero_byte() -> tuple[list[int], int]:
    """``c -> zlib.crc32(b"\\0", c)`` as an affine map over GF(2): columns and offset."""
    b = zlib.crc32(b"\0", 0)
    return [zlib.crc32(b"\0", 1 << k) ^ b for k in range(32)], b


def _apply(cols: list[int], c: int) -> int:
    out, k = 0, 0
    while c:
        if c & 1:
            out ^= cols[k]
        c >>= 1
        k += 1
    return out


def crc32_zeros(crc: int, n: int) -> int:
    """``zlib.crc32(bytes(n), crc)`` in O(log n): appending zeros is an affine map."""
    cols, off = _affine_crc_zero_byte()
    while n:
        if n & 1:
            crc = _apply(cols, crc) ^ off
        # Square the map: (M, b) -> (M M, M b ^ b).
        cols, off = [_apply(cols, c) for c in cols], _apply(cols, off) ^ off
        n >>= 1
    return crc


def write_sparse_npz(
    path: Path, key: str, dtype: str, shape: Sequence[int], markers: Mapping[int, np.ndarray]
) -> None:
    """A one-member ZIP_STORED ``.npz`` (zip64, as ``np.savez`` writes) with holes for zeros."""
    header = _npy_header(dtype, shape)
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
    size = len(header) + int(shape[0]) * row_bytes
    crc, pos = zlib.crc32(header), 0
    for index in sorted(markers):
        data = np.ascontiguousarray(markers[index], dtype=dtype).tobytes()
        crc = zlib.crc32(data, crc32_zeros(crc, index * row_bytes - pos))
        pos = index * row_bytes + len(data)
    crc = crc32_zeros(crc, int(shape[0]) * row_bytes - pos)
    name = f"{key}.npy".encode()
    extra = struct.pack("<HHQQ", 1, 16, size, size)
    full = 0xFFFFFFFF
    local = struct.pack(
        "<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0x21, crc, full, full, len(name), len(extra)
    )
    local += name + extra
    central = struct.pack(
        "<IHHHHHHIIIHHHHHII",
        0x02014B50, 45, 45, 0, 0, 0, 0x21, crc, full, full, len(name), len(extra), 0, 0, 0, 0, 0,
    )  # fmt: skip
    central += name + extra
    cd_offset = len(local) + size
    eocd64 = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, 1, 1, len(central), cd_offset)
    locator = struct.pack("<IIQI", 0x07064B50, 0, cd_offset + len(central), 1)
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), full, 0)
    with open(path, "wb") as f:
        f.write(local + header)
        for index in sorted(markers):
            f.seek(len(local) + len(header) + index * row_bytes)
            f.write(np.ascontiguousarray(markers[index], dtype=dtype).tobytes())
        f.seek(cd_offset)
        f.write(central + eocd64 + locator + eocd)


def write_mpi3d(
    path: Path,
    markers: Iterable[Sequence[int]] = MPI3D_MARKERS,
    *,
    count: int | None = None,
    dtype: str = "uint8",
) -> dict[int, np.ndarray]:
    """Write a full-size, sparse ``mpi3d_*.npz``; returns {index: image} of the markers."""
    n = int(np.prod(MPI3D_SIZES)) if count is None else count
    written = {}
    for f in markers:
        index = c_index(f, MPI3D_SIZES)
        if index < n:
            written[index] = marker_image(index, (64, 64, 3))
    write_sparse_npz(path, "images", dtype, (n, 64, 64, 3), written)
    return written


# --- Cars3D -----------------------------------------------------------------------------
def cars3d_colour(obj: int, azimuth: int, elevation: int) -> tuple[int, int, int]:
    """The constant RGB colour of the image of object ``obj`` at (azimuth, elevation)."""
    return (obj, 10 * azimuth, 50 * elevation + 5)


def write_cars3d(folder: Path, n_objects: int = 183) -> list[str]:
    """Write ``car_XXX_mesh.mat`` files (in reverse name order); returns sorted stems.

    Object ``k`` (in sorted file-name order) has red = k, green = 10 * azimuth and
    blue = 50 * elevation + 5, constant over the image so resizing keeps it exact.

    ``savemat`` takes ~25 ms a file (column-major copy + zlib level 6); instead one
    uncompressed MAT element is made by ``savemat`` and, per object, its red planes are
    patched and it is written as a MATLAB ``miCOMPRESSED`` element (zlib level 1), the
    form MATLAB itself writes. ``loadmat`` reads these like any other v5 file.
    """
    from scipy.io import savemat

    folder.mkdir(parents=True, exist_ok=True)
    stems = [f"car_{i:03d}_mesh" for i in range(1, n_objects + 1)]
    im = np.zeros(CARS3D_MESH, dtype=np.uint8)
    im[:, :, 1] = (10 * np.arange(24))[:, None]
    im[:, :, 2] = (50 * np.arange(4) + 5)[None, :]
    buf = io.BytesIO()
    savemat(buf, {"im": im}, do_compression=False)
    header, element = buf.getvalue()[:128], bytearray(buf.getvalue()[128:])
    # The element ends with the data in column-major order (no padding: 4718592 % 8 == 0),
    # i.e. C order over the reversed axes (elevation, azimuth, channel, width, height).
    data = np.frombuffer(element, dtype=np.uint8, offset=len(element) - im.nbytes)
    planes = data.reshape(CARS3D_MESH[::-1])
    for k in reversed(range(n_objects)):
        planes[:, :, 0] = k
        packed = zlib.compress(bytes(element), 1)
        mi_compressed = 15
        blob = header + struct.pack("<II", mi_compressed, len(packed)) + packed
        (folder / f"{stems[k]}.mat").write_bytes(blob)
    (folder / "list.txt").write_text("\n".join(stems) + "\n")
    return stems


def write_bad_cars3d(folder: Path, kind: str, n_objects: int = 183) -> None:
    """183 files whose first (by name) is broken: ``missing_im``, ``shape`` or ``truncated``.

    The loader reports the first file in name order, so the other 182 are tiny stubs
    (a wrong-shape ``im``) to keep this fast.
    """
    from scipy.io import savemat

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(2, n_objects + 1):
        savemat(folder / f"car_{i:03d}_mesh.mat", {"im": np.zeros((2, 2, 3, 24, 4), np.uint8)})
    first = folder / "car_001_mesh.mat"
    if kind == "missing_im":
        savemat(first, {"images": np.zeros((2, 2), np.uint8)})
    elif kind == "shape":
        savemat(first, {"im": np.zeros((64, 64, 3, 24, 4), np.uint8)})
    elif kind == "truncated":
        savemat(first, {"im": np.zeros(CARS3D_MESH, np.uint8)}, do_compression=True)
        data = first.read_bytes()
        first.write_bytes(data[: len(data) // 2])
    else:
        raise ValueError(kind)


# --- CelebA -----------------------------------------------------------------------------
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Attractive",
    "Bags_Under_Eyes",
) + tuple(f"Attr_{i}" for i in range(4, 40))


def celeba_colours(i: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(centre colour, border colour) of image ``i``: the crop must keep only the centre."""
    return (20 * i + 10, 255 - 20 * i, 128), (0, 255, 0)


def write_celeba(root: Path, n: int = 10, *, partition: bool = True) -> np.ndarray:
    """Write ``img_align_celeba/``, ``list_attr_celeba.txt`` and the partition file.

    Image i is 178x218 with a 148x148 centre (the crop148 window) in one colour and the
    border in another. Returns the attributes in {0, 1} as written (int8, (n, 40)).
    """
    images = root / "img_align_celeba"
    images.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        centre, border = celeba_colours(i)
        pixels = np.empty((218, 178, 3), dtype=np.uint8)
        pixels[:] = border
        pixels[35:183, 15:163] = centre
        Image.fromarray(pixels).save(images / f"{i + 1:06d}.jpg", quality=95)
    attributes = np.random.RandomState(1).randint(0, 2, size=(n, 40)).astype(np.int8)
    lines = [str(n), " ".join(CELEBA_ATTRIBUTES) + " "]
    for i in range(n):
        values = " ".join(f"{2 * a - 1:2d}" for a in attributes[i])
        lines.append(f"{i + 1:06d}.jpg {values}")
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    if partition:
        parts = [0 if i < n - 4 else (1 if i < n - 2 else 2) for i in range(n)]
        text = "".join(f"{i + 1:06d}.jpg {p}\n" for i, p in enumerate(parts))
        (root / "list_eval_partition.txt").write_text(text)
    return attributes

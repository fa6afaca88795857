"""Lazy access to the arrays inside published ``.npz`` files, and the caches built from them.

The published datasets are too large to load: MPI3D's ``images`` is 12.7 GB, dSprites'
``imgs`` 3 GB once decompressed. ``np.load`` on an ``.npz`` cannot memory-map, so this
module reads the zip container itself:

* a member stored without compression (``ZIP_STORED``, what ``np.savez`` writes) is
  memory-mapped in place, at the data offset found from the zip local header and the
  ``.npy`` header that follows it;
* a compressed member (``np.savez_compressed``) is streamed out once, in chunks, into a
  cache ``.npy`` (written to a temporary file, then renamed, so an interrupted run never
  leaves a half-written cache) and that cache is memory-mapped.

Nothing here unpickles: object arrays are refused, so a file from an untrusted source
cannot run code. Every problem a user can cause (missing file or key, truncated or
corrupt zip, unexpected dtype or shape) becomes one :class:`DatasetError` naming the file.

The small cache helpers (where caches go, the JSON stamp that says which source a cache
was built from, atomic writes) are shared with the other file loaders (dSprites, Cars3D).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from factordiff.errors import DatasetError

#: Bumped whenever the layout of a cache written by this module (or a user of it) changes.
CACHE_VERSION = 1

#: Bytes read from a zip stream at a time (bounded memory whatever the member size).
CHUNK_BYTES = 32 << 20

#: A shape to check against: ``None`` entries match any length.
ShapeSpec = Sequence[int | None]

_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    EOFError,
    OSError,
    ValueError,
    struct.error,
    NotImplementedError,  # unsupported compression method
)


# --- locating files and cache folders ------------------------------------------------
def locate_file(root: str | os.PathLike[str], filename: str, dataset: str) -> Path:
    """``root`` itself when it is a file, else ``root/filename``; a clear error otherwise."""
    root = Path(root).expanduser()
    if root.is_file():
        return root
    if root.is_dir():
        path = root / filename
        if path.is_file():
            return path
        raise DatasetError(
            f"{dataset}: {path} not found (expected the published file {filename} in {root})"
        )
    raise DatasetError(f"{dataset}: {root} does not exist (expected {filename} or its folder)")


def resolve_cache_dir(source_dir: Path, cache_dir: str | os.PathLike[str] | None) -> Path:
    """Where a cache derived from files in ``source_dir`` goes.

    ``cache_dir`` when given; else next to the source (so the cache travels with the
    data); else, when that folder is read-only, a per-source folder under
    ``$XDG_CACHE_HOME/factordiff`` (``~/.cache/factordiff``).
    """
    if cache_dir is not None:
        target = Path(cache_dir).expanduser()
    elif os.access(source_dir, os.W_OK):
        return source_dir
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        digest = hashlib.sha1(str(source_dir.resolve()).encode()).hexdigest()[:16]
        target = base / "factordiff" / digest
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"cannot create cache folder {target}: {exc}") from exc
    return target


def file_signature(path: Path) -> dict[str, Any]:
    """Name, size and modification time: enough to notice a replaced source file."""
    st = path.stat()
    return {"name": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _stamp_path(npy_path: Path) -> Path:
    return npy_path.with_name(npy_path.name + ".json")


def _normalise(stamp: Mapping[str, Any]) -> dict[str, Any]:
    # Compare as JSON sees it (tuples become lists), since that is what was saved.
    return json.loads(json.dumps(dict(stamp)))


def read_cached_npy(
    npy_path: Path,
    expect: Mapping[str, Any],
    dtype: np.dtype | type | str,
    shape: tuple[int, ...],
) -> tuple[np.ndarray, dict[str, Any]] | None:
    """The memory-mapped cache and its full stamp, or ``None`` when absent or stale.

    A cache is valid when every key of ``expect`` (version, source signature, ...) equals
    the saved stamp and the array has the expected dtype and shape. Extra keys in the
    saved stamp (e.g. factor values computed at build time) are returned to the caller.
    """
    try:
        saved = json.loads(_stamp_path(npy_path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict):
        return None
    if any(saved.get(k) != v for k, v in _normalise(expect).items()):
        return None
    try:
        array = np.load(npy_path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    if array.dtype != np.dtype(dtype) or array.shape != tuple(shape):
        return None
    return array, saved


def write_cached_npy(
    npy_path: Path,
    stamp: Mapping[str, Any],
    dtype: np.dtype | type | str,
    shape: tuple[int, ...],
    fill: Callable[[np.ndarray], Mapping[str, Any] | None],
    fortran_order: bool = False,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Build a cache ``.npy`` atomically and return it memory-mapped, with its stamp.

    ``fill`` receives a writable memory map of the final dtype/shape and may return extra
    stamp entries. The array is written to a temporary file in the same folder and renamed
    into place, then the stamp is written the same way; a crash at any point leaves either
    no cache or an old one that the stamp marks stale, never a half-written one that looks
    valid. Concurrent builders (e.g. several training processes) each write their own
    temporary file; the last rename wins and every result is complete.
    """
    npy_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=npy_path.parent, prefix=f".{npy_path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            target = np.lib.format.open_memmap(
                tmp, mode="w+", dtype=np.dtype(dtype), shape=shape, fortran_order=fortran_order
            )
            extra = fill(target)
            target.flush()
            del target
            os.replace(tmp, npy_path)
            full = {**_normalise(stamp), **_normalise(extra or {})}
            _write_text_atomic(_stamp_path(npy_path), json.dumps(full))
        except OSError as exc:
            raise DatasetError(
                f"cannot write cache {npy_path} ({exc}); free space or pass cache_dir=DIR"
            ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    cached = read_cached_npy(npy_path, stamp, dtype, shape)
    if cached is None:  # pragma: no cover - only if the file vanished under us
        raise DatasetError(f"cache {npy_path} could not be read back after writing it")
    return cached


def _write_text_atomic(path: Path, text: str) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp_name, path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


# --- npz members -----------------------------------------------------------------------
@dataclass(frozen=True)
class NpzMember:
    """An array inside an ``.npz``: its ``.npy`` header and where its bytes are."""

    path: Path
    key: str
    dtype: np.dtype
    shape: tuple[int, ...]
    fortran_order: bool
    compressed: bool
    #: Absolute file offset of the array bytes; only for stored (uncompressed) members.
    data_offset: int | None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def _open_zip(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        return zipfile.ZipFile(path)
    except _ZIP_ERRORS as exc:
        raise DatasetError(
            f"{path}: not a readable .npz (zip) file; it is truncated or corrupt ({exc})"
        ) from exc


def _find_info(zf: zipfile.ZipFile, path: Path, key: str) -> zipfile.ZipInfo:
    names = zf.namelist()
    for name in (f"{key}.npy", key):
        if name in names:
            return zf.getinfo(name)
    keys = sorted(n[:-4] if n.endswith(".npy") else n for n in names)
    raise DatasetError(f"{path}: no array {key!r} in this .npz (it has {keys})")


def _read_npy_header(fp: BinaryIO, where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except _ZIP_ERRORS as exc:
        raise DatasetError(f"{where}: not a valid .npy array header ({exc})") from exc
    if dtype.hasobject:
        raise DatasetError(
            f"{where}: holds Python objects (a pickle); refusing to load it, only plain arrays"
        )
    return tuple(int(s) for s in shape), bool(fortran), dtype


def _stored_data_start(path: Path, info: zipfile.ZipInfo) -> int:
    """Offset of a stored member's first byte: after its local header, name and extra."""
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise DatasetError(f"{path}: corrupt zip local header for {info.filename!r}")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + name_len + extra_len


def check_array_spec(
    where: str,
    dtype: np.dtype,
    shape: tuple[int, ...],
    want_dtype: np.dtype | type | str | None,
    want_shape: ShapeSpec | None,
) -> None:
    """Raise a :class:`DatasetError` when ``dtype``/``shape`` differ from what is expected."""
    if want_dtype is not None and dtype != np.dtype(want_dtype):
        raise DatasetError(f"{where}: dtype {dtype}, expected {np.dtype(want_dtype)}")
    if want_shape is not None:
        ok = len(shape) == len(want_shape) and all(
            w is None or w == s for s, w in zip(shape, want_shape, strict=True)
        )
        if not ok:
            want = "(" + ", ".join("N" if w is None else str(w) for w in want_shape) + ")"
            raise DatasetError(f"{where}: shape {shape}, expected {want}")


def inspect_npz_member(
    path: str | os.PathLike[str],
    key: str,
    *,
    dtype: np.dtype | type | str | None = None,
    shape: ShapeSpec | None = None,
) -> NpzMember:
    """Header of array ``key`` in ``path`` (no data read); checks dtype/shape when given."""
    path = Path(path)
    where = f"{path}: array {key!r}"
    with _open_zip(path) as zf:
        info = _find_info(zf, path, key)
        if info.flag_bits & 0x1:
            raise DatasetError(f"{where} is encrypted")
        compressed = info.compress_type != zipfile.ZIP_STORED
        if compressed:
            try:
                with zf.open(info) as stream:
                    arr_shape, fortran, arr_dtype = _read_npy_header(stream, where)
            except _ZIP_ERRORS as exc:
                raise DatasetError(f"{where}: corrupt or truncated ({exc})") from exc
            data_offset = None
        else:
            start = _stored_data_start(path, info)
            with open(path, "rb") as f:
                f.seek(start)
                arr_shape, fortran, arr_dtype = _read_npy_header(f, where)
                data_offset = f.tell()
    member = NpzMember(path, key, arr_dtype, arr_shape, fortran, compressed, data_offset)
    check_array_spec(where, arr_dtype, arr_shape, dtype, shape)
    if data_offset is not None:
        header_len = data_offset - _stored_data_start(path, info)
        if info.file_size != header_len + member.nbytes:
            raise DatasetError(
                f"{where}: the zip entry holds {info.file_size} bytes but the array header "
                f"{arr_shape} {arr_dtype} needs {header_len + member.nbytes}; corrupt file"
            )
        size = path.stat().st_size
        if size < data_offset + member.nbytes:
            raise DatasetError(
                f"{where}: file is truncated ({size} bytes, the array ends at byte "
                f"{data_offset + member.nbytes})"
            )
    return member


@contextlib.contextmanager
def _data_stream(member: NpzMember) -> Iterator[BinaryIO]:
    """The member's zip stream, positioned just after its ``.npy`` header."""
    with _open_zip(member.path) as zf:
        info = _find_info(zf, member.path, member.key)
        with zf.open(info) as stream:
            _read_npy_header(stream, f"{member.path}: array {member.key!r}")
            yield stream


def _iter_raw(member: NpzMember, chunk_bytes: int) -> Iterator[bytes]:
    """The member's array bytes in chunks; every zip/zlib failure is a DatasetError.

    Reads one byte past the end so that ``zipfile`` reaches the end of the entry and
    verifies its CRC-32: a silently corrupted member fails here, not later.
    """
    where = f"{member.path}: array {member.key!r}"
    left = member.nbytes
    try:
        with _data_stream(member) as stream:
            while left > 0:
                want = min(chunk_bytes, left)
                buf = stream.read(want)
                if len(buf) != want:
                    raise DatasetError(
                        f"{where}: truncated ({member.nbytes - left + len(buf)} of "
                        f"{member.nbytes} bytes present)"
                    )
                left -= want
                yield buf
            stream.read(1)
    except _ZIP_ERRORS as exc:
        raise DatasetError(f"{where}: corrupt or truncated ({exc})") from exc


def iter_npz_rows(member: NpzMember, rows_per_chunk: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(start_row, rows)`` blocks of a C-order member, decoded from the zip stream.

    Memory stays at one block whatever the member size; used to re-encode a large member
    (dSprites' 3 GB ``imgs``) without ever holding it.
    """
    if member.fortran_order and len(member.shape) > 1:
        raise DatasetError(
            f"{member.path}: array {member.key!r} is stored in Fortran order; expected C order"
        )
    row_shape = member.shape[1:]
    row_bytes = max(1, int(np.prod(row_shape, dtype=np.int64)) * member.dtype.itemsize)
    rows_per_chunk = max(1, rows_per_chunk)
    start = 0
    for buf in _iter_raw(member, rows_per_chunk * row_bytes):
        block = np.frombuffer(buf, dtype=member.dtype).reshape(-1, *row_shape)
        yield start, block
        start += block.shape[0]


def read_npz_member(
    path: str | os.PathLike[str],
    key: str,
    *,
    dtype: np.dtype | type | str | None = None,
    shape: ShapeSpec | None = None,
) -> np.ndarray:
    """Array ``key`` fully in memory (for small members such as label tables), no pickle."""
    member = inspect_npz_member(path, key, dtype=dtype, shape=shape)
    out = np.empty(member.shape, dtype=member.dtype, order="F" if member.fortran_order else "C")
    raw = _raw_bytes(out, member.fortran_order)
    pos = 0
    for buf in _iter_raw(member, CHUNK_BYTES):
        raw[pos : pos + len(buf)] = np.frombuffer(buf, dtype=np.uint8)
        pos += len(buf)
    return out


def _raw_bytes(array: np.ndarray, fortran_order: bool) -> np.ndarray:
    """A flat uint8 view of ``array``'s memory, in storage order (no copy)."""
    base = array.T if fortran_order else array
    return base.reshape(-1).view(np.uint8)


def memmap_npz_member(
    path: str | os.PathLike[str],
    key: str,
    *,
    dtype: np.dtype | type | str | None = None,
    shape: ShapeSpec | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> np.ndarray:
    """Array ``key`` of ``path`` as a read-only memory map, without reading it whole.

    Stored members are mapped in place; compressed members are extracted once into
    ``<cache>/<npz stem>.<key>.npy`` (cache folder: see :func:`resolve_cache_dir`) and
    that file is mapped. The cache is rebuilt when the source file changes.
    """
    path = Path(path)
    member = inspect_npz_member(path, key, dtype=dtype, shape=shape)
    order = "F" if member.fortran_order else "C"
    if not member.compressed:
        if member.nbytes == 0:
            return np.empty(member.shape, dtype=member.dtype, order=order)
        assert member.data_offset is not None
        return np.memmap(
            path,
            dtype=member.dtype,
            mode="r",
            offset=member.data_offset,
            shape=member.shape,
            order=order,
        )
    cache = resolve_cache_dir(path.parent, cache_dir) / f"{path.stem}.{key}.npy"
    expect = {
        "version": CACHE_VERSION,
        "kind": "npz-member",
        "key": key,
        "source": file_signature(path),
    }
    hit = read_cached_npy(cache, expect, member.dtype, member.shape)
    if hit is not None:
        return hit[0]

    def fill(target: np.ndarray) -> None:
        raw = _raw_bytes(target, member.fortran_order)
        pos = 0
        for buf in _iter_raw(member, CHUNK_BYTES):
            raw[pos : pos + len(buf)] = np.frombuffer(buf, dtype=np.uint8)
            pos += len(buf)

    array, _ = write_cached_npy(
        cache, expect, member.dtype, member.shape, fill, fortran_order=member.fortran_order
    )
    return array

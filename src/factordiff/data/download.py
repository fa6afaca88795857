"""Fetch the published dataset files: resumable, checksum-verified, safely extracted.

The files are large (up to a few GB) and their hosts have moved before, so every step is
built to be re-run: a download streams into ``<file>.part`` and resumes it with an HTTP
Range request, a finished file is only renamed into place once its checksum matches, and
``prepare`` skips work already done. ``base_url`` (or ``$FACTORDIFF_MIRROR``) swaps the
host for a mirror, which is also how the tests serve files from a local server.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import stat
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from factordiff.errors import DatasetError, DownloadError

#: Environment variable with the same meaning as ``base_url``: a mirror holding the files.
MIRROR_ENV = "FACTORDIFF_MIRROR"

_USER_AGENT = "factordiff (https://pypi.org/project/factordiff)"
_HASH_CHUNK = 1 << 22  # 4 MiB: hashing GB files in slices keeps memory flat


@dataclass(frozen=True)
class RemoteFile:
    """One published file: where it lives and how to recognise a good copy.

    ``extract``: ``None`` keeps the file as downloaded; a string unpacks the archive into
    the dataset root, keeping only members under that prefix (``""`` keeps everything).
    """

    filename: str
    url: str
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None
    extract: str | None = None


CELEBA_PAGE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
MPI3D_ANNOUNCE = (
    "https://github.com/rr-learning/disentanglement_dataset (README, and issue 4: "
    "https://github.com/rr-learning/disentanglement_dataset/issues/4)"
)

# MPI3D history: the original links (storage.googleapis.com/disentanglement_dataset/
# Final_Dataset/mpi3d_{toy,real}.npz) died in 2023. In issue 4 (2024-05-08) the maintainers
# posted storage.googleapis.com/mpi3d_disentanglement_dataset/data/{mpi3d_toy,real}.npz;
# on 2025-04-17 their README moved the links to Hugging Face ("Corrected corrupted
# mpi3d_real.npz dataset"), which is what we use. No checksum is published for either.
_HF_MPI3D = "https://huggingface.co/datasets/waleedgondal/mpi3d/resolve/main"

SOURCES: dict[str, list[RemoteFile]] = {
    "dsprites": [
        RemoteFile(
            "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz",
            "https://github.com/deepmind/dsprites-dataset/raw/master/"
            "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz",
            md5="7da33b31b13a06f4b04a70402ce90c2e",
        )
    ],
    "shapes3d": [
        RemoteFile(
            "3dshapes.h5",
            "https://storage.googleapis.com/3d-shapes/3dshapes.h5",
            md5="099a2078d58cec4daad0702c55d06868",
        )
    ],
    "mpi3d_toy": [RemoteFile("mpi3d_toy.npz", f"{_HF_MPI3D}/mpi3d_toy.npz")],
    "mpi3d_real": [RemoteFile("mpi3d_real.npz", f"{_HF_MPI3D}/mpi3d_real.npz")],
    "mpi3d_realistic": [RemoteFile("mpi3d_realistic.npz", f"{_HF_MPI3D}/mpi3d_realistic.npz")],
    "cars3d": [
        RemoteFile(
            "nips2015-analogy-data.tar.gz",
            "http://www.scottreed.info/files/nips2015-analogy-data.tar.gz",
            extract="data/cars/",
        )
    ],
    # Google Drive behind a confirmation page: placed by hand (see MANUAL_DATASETS).
    "celeba": [
        RemoteFile(
            "img_align_celeba.zip", CELEBA_PAGE, md5="00d2c5bc6d35e252742224ab0c1e8fcb", extract=""
        ),
        RemoteFile("list_attr_celeba.txt", CELEBA_PAGE, md5="75e246fa4810816ffd6ee81facbd244c"),
        RemoteFile("list_eval_partition.txt", CELEBA_PAGE),
    ],
}

#: Datasets whose host cannot be scripted politely; ``prepare`` explains and verifies.
MANUAL_DATASETS = frozenset({"celeba"})

#: Extra advice on failure, for hosts known to move their files.
_FAILURE_HINTS = {
    f"mpi3d_{variant}.npz": "MPI3D links have moved before; the current ones are announced "
    f"at {MPI3D_ANNOUNCE}."
    for variant in ("toy", "real", "realistic")
}


def _say(message: str) -> None:
    """Progress notes go to stderr so stdout stays clean for piped output."""
    print(message, file=sys.stderr, flush=True)


def resolve_url(remote: RemoteFile, base_url: str | None = None) -> str:
    """The URL to fetch: ``base_url`` (or ``$FACTORDIFF_MIRROR``) replaces all but the file name."""
    base = base_url or os.environ.get(MIRROR_ENV)
    if not base:
        return remote.url
    name = remote.url.rstrip("/").rsplit("/", 1)[-1] or remote.filename
    return f"{base.rstrip('/')}/{name}"


def file_digests(path: Path, algorithms: Iterable[str] = ("md5",)) -> dict[str, str]:
    """Hex digests of ``path``, read in slices so multi-GB files do not fill memory."""
    hashers = {a: hashlib.new(a, usedforsecurity=False) for a in algorithms}
    with open(path, "rb") as f:
        while block := f.read(_HASH_CHUNK):
            for h in hashers.values():
                h.update(block)
    return {a: h.hexdigest() for a, h in hashers.items()}


def _mismatch(path: Path, remote: RemoteFile) -> str | None:
    """Why ``path`` is not a good copy of ``remote`` (expected vs got), or None if it is."""
    if remote.size is not None:
        got = path.stat().st_size
        if got != remote.size:
            return f"size mismatch: expected {remote.size} bytes, got {got}"
    wanted = {a: v.lower() for a, v in (("md5", remote.md5), ("sha256", remote.sha256)) if v}
    if not wanted:
        return None
    got_digests = file_digests(path, wanted)
    for algo, expected in wanted.items():
        if got_digests[algo] != expected:
            return f"{algo} mismatch: expected {expected}, got {got_digests[algo]}"
    return None


def _failure(url: str, remote: RemoteFile, what: str, part: Path | None) -> DownloadError:
    """A DownloadError naming the URL, what went wrong and how to recover."""
    msg = f"download of {url} failed: {what}."
    if part is not None and part.exists():
        msg += f" The partial file {part} was kept; re-run to resume."
    else:
        msg += " Re-run to try again."
    hint = _FAILURE_HINTS.get(remote.filename)
    if hint:
        msg += f" {hint}"
    return DownloadError(msg)


def _total_from_content_range(value: str | None) -> int | None:
    """The full size from a ``Content-Range: bytes a-b/N`` (or ``*/N``) header."""
    m = re.search(r"/(\d+)\s*$", value or "")
    return int(m.group(1)) if m else None


def _start_from_content_range(value: str | None) -> int | None:
    m = re.match(r"\s*bytes\s+(\d+)-", value or "")
    return int(m.group(1)) if m else None


def _fetch(
    url: str,
    remote: RemoteFile,
    part: Path,
    *,
    progress: bool,
    chunk_size: int,
    timeout: float,
) -> bool:
    """Stream ``url`` into ``part``, resuming it when present.

    Returns True when the caller should start over (the server refused the resume and the
    partial file was unusable, so it was deleted), False when ``part`` is complete.
    """
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        content_range = err.headers.get("Content-Range") if err.headers else None
        err.close()
        if err.code == 416 and offset:
            # Nothing left to send: either the .part is already whole, or it is junk.
            total = _total_from_content_range(content_range)
            if total == offset or (
                total is None
                and (remote.md5 or remote.sha256 or remote.size)
                and _mismatch(part, remote) is None
            ):
                return False
            _say(f"{part}: the server cannot resume it (HTTP 416); starting over")
            part.unlink()
            return True
        raise _failure(url, remote, f"HTTP {err.code} {err.reason}", part) from err
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        reason = getattr(err, "reason", None) or err
        raise _failure(url, remote, f"network error ({reason})", part) from err

    with response:
        status = response.status
        length_header = response.headers.get("Content-Length")
        length = int(length_header) if length_header and length_header.isdigit() else None
        if status == 206 and offset:
            start = _start_from_content_range(response.headers.get("Content-Range"))
            if start is not None and start != offset:
                _say(f"{url}: the server resumed at byte {start}, not {offset}; starting over")
                part.unlink()
                return True
            mode = "ab"
        elif status == 200:
            if offset:
                _say(f"{url}: the server does not support resuming; restarting from zero")
            offset = 0
            mode = "wb"
        else:
            raise _failure(url, remote, f"unexpected HTTP status {status}", part)

        from tqdm.auto import tqdm

        total = offset + length if length is not None else remote.size
        written = 0
        bar = tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=remote.filename,
            disable=not progress,
            leave=False,
        )
        try:
            with bar, open(part, mode) as out:
                while chunk := response.read(chunk_size):
                    out.write(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            raise _failure(url, remote, f"transfer interrupted ({err})", part) from err
    if length is not None and written != length:
        raise _failure(
            url, remote, f"incomplete transfer: expected {length} bytes, got {written}", part
        )
    return False


def download(
    remote: RemoteFile,
    dest_dir: Path,
    *,
    progress: bool = True,
    base_url: str | None = None,
    chunk_size: int = 1 << 20,
    timeout: float = 60,
) -> Path:
    """Download ``remote`` into ``dest_dir`` and return the verified file's path.

    Re-runnable: a good file already present is kept without any request, a bad one is
    deleted and fetched again, and an interrupted ``.part`` resumes where it stopped.
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / remote.filename
    part = final.with_name(final.name + ".part")
    url = resolve_url(remote, base_url)

    if final.exists():
        problem = _mismatch(final, remote)
        if problem is None:
            return final
        _say(f"{final}: {problem}; deleting it and downloading it again from {url}")
        final.unlink()

    if _fetch(url, remote, part, progress=progress, chunk_size=chunk_size, timeout=timeout):
        _fetch(url, remote, part, progress=progress, chunk_size=chunk_size, timeout=timeout)

    problem = _mismatch(part, remote)
    if problem is not None:
        part.unlink()
        raise DownloadError(
            f"download of {url} is corrupt: {problem}. The file {part} was deleted; "
            f"re-run to download it again (if this repeats, the host changed the file)."
        )
    if not (remote.md5 or remote.sha256):
        digest = file_digests(part, ("sha256",))["sha256"]
        _say(
            f"{remote.filename}: no published checksum; sha256 {digest} (record it to check copies)"
        )
    os.replace(part, final)
    return final


# --------------------------------------------------------------------------- extraction


def _safe_member_path(archive: Path, name: str) -> PurePosixPath:
    """``name`` as a relative path, or DatasetError if it could escape the target folder."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or re.match(r"^[A-Za-z]:", name) or ".." in path.parts:
        raise DatasetError(
            f"{archive}: refusing to extract unsafe member {name!r} "
            f"(expected relative paths without '..'); the archive may be malicious or corrupt"
        )
    return path


def _kept(path: PurePosixPath, prefix: str) -> bool:
    if not prefix:
        return True
    want = PurePosixPath(prefix)
    return path == want or want in path.parents


def _write_members(
    dest: Path, plan: list[tuple[PurePosixPath, bool, Callable[[], BinaryIO | None]]]
) -> int:
    """Write checked archive members (path, is_dir, opener) under ``dest``; files written."""
    count = 0
    for path, is_dir, open_member in plan:
        target = dest.joinpath(*path.parts)
        if is_dir:
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        src = open_member()
        if src is None:  # pragma: no cover - tar file members always have data
            continue
        with src, open(target, "wb") as out:
            shutil.copyfileobj(src, out, _HASH_CHUNK)
        count += 1
    return count


def _extract_tar(archive: Path, dest: Path, prefix: str) -> int:
    """Unpack regular files and folders under ``prefix``; links and devices are refused."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            plan = []
            for m in members:
                path = _safe_member_path(archive, m.name)
                if not _kept(path, prefix):
                    continue
                if not (m.isfile() or m.isdir()):
                    raise DatasetError(
                        f"{archive}: refusing to extract {m.name!r}: expected regular files "
                        f"and folders only, found a link or special file"
                    )
                plan.append((path, m.isdir(), lambda m=m: tar.extractfile(m)))
            count = _write_members(dest, plan)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise DatasetError(
            f"{archive}: not a readable tar archive ({err}); delete it and re-run"
        ) from err
    return count


def _extract_zip(archive: Path, dest: Path, prefix: str) -> int:
    """Unpack files under ``prefix`` from a zip, refusing absolute, '..' and symlink members."""
    try:
        with zipfile.ZipFile(archive) as zf:
            plan = []
            for info in zf.infolist():
                path = _safe_member_path(archive, info.filename)
                if not _kept(path, prefix):
                    continue
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise DatasetError(
                        f"{archive}: refusing to extract symlink {info.filename!r}: "
                        f"expected regular files and folders only"
                    )
                plan.append((path, info.is_dir(), lambda info=info: zf.open(info)))
            count = _write_members(dest, plan)
    except (zipfile.BadZipFile, zlib.error, OSError) as err:
        raise DatasetError(
            f"{archive}: not a readable zip archive ({err}); delete it and re-run"
        ) from err
    return count


def _marker(root: Path, remote: RemoteFile) -> Path:
    """Written after a complete extraction, so re-runs skip it (even if the archive is gone)."""
    return root / f".{remote.filename}.extracted"


def extract(archive: Path, dest: Path, prefix: str = "") -> int:
    """Safely unpack ``archive`` (.tar, .tar.gz, .tgz, .zip) into ``dest``; returns #files."""
    archive, dest = Path(archive), Path(dest)
    if archive.name.endswith(".zip"):
        return _extract_zip(archive, dest, prefix)
    if archive.name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        return _extract_tar(archive, dest, prefix)
    raise DatasetError(f"{archive}: unknown archive type (expected .zip, .tar or .tar.gz)")


def _extract_once(remote: RemoteFile, archive: Path, root: Path) -> None:
    assert remote.extract is not None
    count = extract(archive, root, remote.extract)
    if remote.extract and count == 0:
        raise DatasetError(
            f"{archive}: no files under {remote.extract!r} (expected the published layout); "
            f"delete it and re-run"
        )
    _marker(root, remote).touch()
    where = root / remote.extract if remote.extract else root
    _say(f"{archive.name}: extracted {count} files into {where}")


# --------------------------------------------------------------------------- prepare


def _manual_instructions(name: str, root: Path) -> str:
    lines = [
        f"{name}: this dataset must be downloaded by hand (its host is Google Drive behind a "
        f"confirmation page, which we do not scrape).",
        f"  1. Open {CELEBA_PAGE} and follow 'Downloads' (Google Drive or Baidu).",
        "  2. Download these files:",
    ]
    for r in SOURCES[name]:
        check = f"md5 {r.md5}" if r.md5 else "no published checksum"
        lines.append(f"       {r.filename}  ({check})")
    lines.append(f"  3. Put them in {root} and re-run this command to verify and unpack them.")
    return "\n".join(lines)


def _prepare_manual(name: str, root: Path) -> Path:
    """Verify the files the user placed by hand and unpack the archives among them."""
    missing: list[str] = []
    for remote in SOURCES[name]:
        path = root / remote.filename
        unpacked = remote.extract is not None and _marker(root, remote).exists()
        if not path.exists():
            if not unpacked:
                missing.append(remote.filename)
            continue
        problem = _mismatch(path, remote)
        if problem is not None:
            raise DatasetError(
                f"{path}: {problem}. The file is damaged or not the published one; "
                f"download it again from {CELEBA_PAGE}."
            )
        if not (remote.md5 or remote.sha256):
            digest = file_digests(path, ("sha256",))["sha256"]
            _say(f"{remote.filename}: no published checksum; sha256 {digest}")
        else:
            _say(f"{remote.filename}: checksum ok")
        if remote.extract is not None and not unpacked:
            _extract_once(remote, path, root)
    if missing:
        _say(_manual_instructions(name, root))
        required = [m for m in missing if m != "list_eval_partition.txt"]
        if required:
            raise DatasetError(
                f"{name}: missing {', '.join(missing)} in {root} (expected the files listed "
                f"above, from {CELEBA_PAGE})"
            )
        _say(f"{name}: note: {', '.join(missing)} not found; the official split is unavailable")
    return root


def prepare(name: str, root: Path, *, progress: bool = True, base_url: str | None = None) -> Path:
    """Make ``root`` hold dataset ``name`` in its published layout; returns ``root``.

    Idempotent: verified files are kept, finished extractions are skipped, and an
    interrupted download resumes. ``base_url``/``$FACTORDIFF_MIRROR`` fetch from a mirror.
    """
    key = name.lower().replace("-", "_")
    if key not in SOURCES:
        raise DatasetError(
            f"no download source for dataset {name!r}; downloadable: {', '.join(SOURCES)}"
        )
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    if key in MANUAL_DATASETS:
        return _prepare_manual(key, root)
    for remote in SOURCES[key]:
        if remote.extract is not None and _marker(root, remote).exists():
            continue
        path = download(remote, root, progress=progress, base_url=base_url)
        if remote.extract is not None:
            _extract_once(remote, path, root)
    return root

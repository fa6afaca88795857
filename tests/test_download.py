"""Downloads against a real local HTTP server (with Range support), so resume, restart,
checksum and extraction paths run through urllib exactly as they would against a host."""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from factordiff.data import download as dl
from factordiff.data.download import RemoteFile, download, prepare
from factordiff.errors import DatasetError, DownloadError


@dataclass
class Served:
    """What the test server hands out and what it was asked for."""

    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range)
    ignore_range: bool = False
    base: str = ""

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"


def _handler(served: Served) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            name = self.path.lstrip("/")
            rng = self.headers.get("Range")
            served.requests.append((name, rng))
            data = served.files.get(name)
            if data is None:
                self._send(404, b"not found")
                return
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
            if m is None or served.ignore_range:
                self._send(200, data)
                return
            start = int(m.group(1))
            end = int(m.group(2)) if m.group(2) else len(data) - 1
            if start >= len(data):
                self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                return
            end = min(end, len(data) - 1)
            headers = {"Content-Range": f"bytes {start}-{end}/{len(data)}"}
            self._send(206, data[start : end + 1], headers)

        def _send(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

    return Handler


@pytest.fixture
def server() -> Iterator[Served]:
    served = Served()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(served))
    httpd.daemon_threads = True
    served.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield served
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(autouse=True)
def _no_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(dl.MIRROR_ENV, raising=False)


def _payload(n: int = 300_000, seed: int = 0) -> bytes:
    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


# ----------------------------------------------------------------------------- download


def test_full_download_checksum_ok(server: Served, tmp_path: Path, capsys) -> None:
    data = _payload()
    server.files["a.bin"] = data
    remote = RemoteFile("a.bin", server.url("a.bin"), md5=_md5(data), size=len(data))
    path = download(remote, tmp_path / "out", progress=True, chunk_size=4096)
    assert path == tmp_path / "out" / "a.bin"
    assert path.read_bytes() == data
    assert not (tmp_path / "out" / "a.bin.part").exists()
    assert server.requests == [("a.bin", None)]


def test_sha256_checked_and_printed_when_no_checksum(
    server: Served, tmp_path: Path, capsys
) -> None:
    data = _payload(1000)
    server.files["a.bin"] = data
    path = download(RemoteFile("a.bin", server.url("a.bin")), tmp_path, progress=False)
    assert path.read_bytes() == data
    assert hashlib.sha256(data).hexdigest() in capsys.readouterr().err

    server.files["b.bin"] = data
    ok = RemoteFile("b.bin", server.url("b.bin"), sha256=hashlib.sha256(data).hexdigest())
    assert download(ok, tmp_path, progress=False).read_bytes() == data


def test_resume_sends_range_and_is_byte_identical(server: Served, tmp_path: Path) -> None:
    data = _payload()
    server.files["a.bin"] = data
    (tmp_path / "a.bin.part").write_bytes(data[: len(data) // 2])
    remote = RemoteFile("a.bin", server.url("a.bin"), md5=_md5(data))
    path = download(remote, tmp_path, progress=False, chunk_size=4096)
    assert server.requests == [("a.bin", f"bytes={len(data) // 2}-")]
    assert path.read_bytes() == data


def test_server_ignoring_range_restarts_cleanly(server: Served, tmp_path: Path, capsys) -> None:
    data = _payload()
    server.files["a.bin"] = data
    server.ignore_range = True
    (tmp_path / "a.bin.part").write_bytes(data[:1000])
    remote = RemoteFile("a.bin", server.url("a.bin"), md5=_md5(data))
    path = download(remote, tmp_path, progress=False)
    assert server.requests == [("a.bin", "bytes=1000-")]  # asked, got 200, wrote from zero
    assert path.read_bytes() == data
    assert "restarting from zero" in capsys.readouterr().err


def test_416_with_complete_part_is_accepted(server: Served, tmp_path: Path) -> None:
    data = _payload(5000)
    server.files["a.bin"] = data
    (tmp_path / "a.bin.part").write_bytes(data)
    remote = RemoteFile("a.bin", server.url("a.bin"), md5=_md5(data))
    assert download(remote, tmp_path, progress=False).read_bytes() == data
    assert server.requests == [("a.bin", f"bytes={len(data)}-")]


def test_416_with_oversized_part_starts_over(server: Served, tmp_path: Path) -> None:
    data = _payload(5000)
    server.files["a.bin"] = data
    (tmp_path / "a.bin.part").write_bytes(data + b"junk")
    remote = RemoteFile("a.bin", server.url("a.bin"), md5=_md5(data))
    assert download(remote, tmp_path, progress=False).read_bytes() == data
    assert server.requests == [("a.bin", f"bytes={len(data) + 4}-"), ("a.bin", None)]


def test_checksum_mismatch_deletes_and_raises(server: Served, tmp_path: Path) -> None:
    data = _payload(5000)
    server.files["a.bin"] = data
    wrong = "0" * 32
    remote = RemoteFile("a.bin", server.url("a.bin"), md5=wrong)
    with pytest.raises(DownloadError) as exc:
        download(remote, tmp_path, progress=False)
    msg = str(exc.value)
    assert f"expected {wrong}" in msg and f"got {_md5(data)}" in msg
    assert "deleted" in msg and server.url("a.bin") in msg
    assert not (tmp_path / "a.bin").exists()
    assert not (tmp_path / "a.bin.part").exists()


def test_present_correct_file_makes_no_request(server: Served, tmp_path: Path) -> None:
    data = _payload(5000)
    (tmp_path / "a.bin").write_bytes(data)
    remote = RemoteFile("a.bin", server.url("a.bin"), md5=_md5(data))
    assert download(remote, tmp_path, progress=False).read_bytes() == data
    assert server.requests == []


def test_present_wrong_file_is_replaced(server: Served, tmp_path: Path, capsys) -> None:
    data = _payload(5000)
    server.files["a.bin"] = data
    (tmp_path / "a.bin").write_bytes(b"stale")
    remote = RemoteFile("a.bin", server.url("a.bin"), md5=_md5(data))
    assert download(remote, tmp_path, progress=False).read_bytes() == data
    err = capsys.readouterr().err
    assert "md5 mismatch" in err and "downloading it again" in err


def test_404_names_the_url(server: Served, tmp_path: Path) -> None:
    remote = RemoteFile("missing.bin", server.url("missing.bin"))
    with pytest.raises(DownloadError, match=re.escape(server.url("missing.bin"))) as exc:
        download(remote, tmp_path, progress=False)
    assert "404" in str(exc.value)
    assert not (tmp_path / "missing.bin").exists()


def test_unreachable_host_names_url_and_keeps_part(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/a.bin"
    (tmp_path / "a.bin.part").write_bytes(b"half")
    with pytest.raises(DownloadError, match=re.escape(url)) as exc:
        download(RemoteFile("a.bin", url), tmp_path, progress=False, timeout=5)
    assert "re-run" in str(exc.value)
    assert (tmp_path / "a.bin.part").read_bytes() == b"half"


def test_mpi3d_failure_points_at_announcement(server: Served, tmp_path: Path) -> None:
    remote = dl.SOURCES["mpi3d_toy"][0]
    with pytest.raises(DownloadError, match="rr-learning/disentanglement_dataset"):
        download(remote, tmp_path, progress=False, base_url=server.base)


def test_base_url_and_mirror_env(server: Served, tmp_path: Path, monkeypatch) -> None:
    remote = RemoteFile("f.npz", "https://example.invalid/some/dir/f.npz")
    assert dl.resolve_url(remote) == remote.url
    assert dl.resolve_url(remote, "http://m/x/") == "http://m/x/f.npz"
    data = _payload(2000)
    server.files["f.npz"] = data
    monkeypatch.setenv(dl.MIRROR_ENV, server.base)
    assert download(remote, tmp_path, progress=False).read_bytes() == data


# ----------------------------------------------------------------------------- prepare


def test_prepare_cars3d_extracts_only_data_cars(server: Served, tmp_path: Path) -> None:
    archive = _tar_gz(
        {
            "data/cars/list.txt": b"car_001\n",
            "data/cars/car_001_mesh.mat": b"mat",
            "data/sprites/sprites.mat": b"skip me",
        }
    )
    server.files["nips2015-analogy-data.tar.gz"] = archive
    root = tmp_path / "cars"
    assert prepare("cars3d", root, progress=False, base_url=server.base) == root
    assert (root / "data/cars/car_001_mesh.mat").read_bytes() == b"mat"
    assert (root / "data/cars/list.txt").exists()
    assert not (root / "data/sprites").exists()
    n = len(server.requests)
    (root / "nips2015-analogy-data.tar.gz").unlink()  # users may free the space
    prepare("cars3d", root, progress=False, base_url=server.base)  # idempotent
    assert len(server.requests) == n


@pytest.mark.parametrize("bad", ["../evil.txt", "/tmp/evil.txt", "data/cars/../../evil.txt"])
def test_unsafe_tar_member_rejected(server: Served, tmp_path: Path, bad: str) -> None:
    server.files["nips2015-analogy-data.tar.gz"] = _tar_gz(
        {"data/cars/ok.mat": b"ok", bad: b"evil"}
    )
    root = tmp_path / "deep" / "root"
    with pytest.raises(DatasetError, match="unsafe member"):
        prepare("cars3d", root, progress=False, base_url=server.base)
    assert not (tmp_path / "deep" / "evil.txt").exists()
    assert not (root / "data/cars/ok.mat").exists()  # rejected before anything is written


def test_tar_symlink_rejected(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("data/cars/link")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    (tmp_path / "x.tar.gz").write_bytes(buf.getvalue())
    with pytest.raises(DatasetError, match="link"):
        dl.extract(tmp_path / "x.tar.gz", tmp_path / "out", "data/cars/")


def test_unsafe_zip_member_rejected(tmp_path: Path) -> None:
    (tmp_path / "x.zip").write_bytes(_zip({"ok.txt": b"ok", "../evil.txt": b"evil"}))
    with pytest.raises(DatasetError, match="unsafe member"):
        dl.extract(tmp_path / "x.zip", tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_prepare_via_base_url_with_patched_sources(
    server: Served, tmp_path: Path, monkeypatch
) -> None:
    data = _payload(10_000, seed=3)
    server.files["dsprites_small.npz"] = data
    patched = RemoteFile(
        "dsprites_small.npz", "https://nowhere.invalid/dsprites_small.npz", md5=_md5(data)
    )
    monkeypatch.setitem(dl.SOURCES, "dsprites", [patched])
    root = prepare("dSprites", tmp_path / "ds", progress=False, base_url=server.base + "/")
    assert (root / "dsprites_small.npz").read_bytes() == data
    prepare("dsprites", root, progress=False, base_url=server.base)
    assert server.requests == [("dsprites_small.npz", None)]


def test_prepare_unknown_dataset(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="quickstart"):
        prepare("quickstart", tmp_path)


# ----------------------------------------------------------------------------- celeba


def _patch_celeba(monkeypatch, zip_bytes: bytes, attr: bytes) -> None:
    page = dl.CELEBA_PAGE
    monkeypatch.setitem(
        dl.SOURCES,
        "celeba",
        [
            RemoteFile("img_align_celeba.zip", page, md5=_md5(zip_bytes), extract=""),
            RemoteFile("list_attr_celeba.txt", page, md5=_md5(attr)),
            RemoteFile("list_eval_partition.txt", page),
        ],
    )


def test_celeba_missing_files_prints_instructions(tmp_path: Path, capsys) -> None:
    with pytest.raises(DatasetError, match="img_align_celeba.zip"):
        prepare("celeba", tmp_path / "celeba")
    err = capsys.readouterr().err
    assert dl.CELEBA_PAGE in err
    assert "00d2c5bc6d35e252742224ab0c1e8fcb" in err and "75e246fa4810816ffd6ee81facbd244c" in err
    assert "list_eval_partition.txt" in err


def test_celeba_placed_files_verified_and_unzipped(tmp_path: Path, monkeypatch, capsys) -> None:
    zip_bytes = _zip({"img_align_celeba/000001.jpg": b"jpg1", "img_align_celeba/000002.jpg": b"2"})
    attr = b"2\nattrs\n000001.jpg 1\n"
    _patch_celeba(monkeypatch, zip_bytes, attr)
    root = tmp_path / "celeba"
    root.mkdir()
    (root / "img_align_celeba.zip").write_bytes(zip_bytes)
    (root / "list_attr_celeba.txt").write_bytes(attr)
    (root / "list_eval_partition.txt").write_bytes(b"000001.jpg 0\n")
    assert prepare("celeba", root) == root
    assert (root / "img_align_celeba" / "000001.jpg").read_bytes() == b"jpg1"
    os.remove(root / "img_align_celeba.zip")
    prepare("celeba", root)  # already unpacked: the zip is no longer needed

    (root / "list_attr_celeba.txt").write_bytes(b"tampered")
    with pytest.raises(DatasetError, match=f"expected {_md5(attr)}"):
        prepare("celeba", root)

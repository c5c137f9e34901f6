"""``sources.fetch`` against a real HTTP server on 127.0.0.1: downloads, the cache, archives, errors, mounts."""

from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from byzer_like import sources
from byzer_like.errors import InvalidRequestError, InvalidSpecError, UpstreamError

BODY = bytes(range(256)) * 40  # 10 KiB


@dataclass
class Site:
    """What the test server serves and what it saw."""

    base: str
    files: dict[str, bytes] = field(default_factory=dict)
    cut_after: dict[str, int] = field(default_factory=dict)  # path -> bytes sent before the connection drops
    ranges: bool = True  # honour Range/If-Range (with an ETag)
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.base + path

    def hits(self, path: str) -> int:
        return sum(1 for p, _ in self.seen if p.split("?")[0] == path)


def _handler(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def do_GET(self):  # noqa: N802 (http.server's name)
            site.seen.append((self.path, dict(self.headers)))
            path = self.path.split("?")[0]
            if path == "/boom":
                self.send_error(500, "Internal Server Error")
                return
            body = site.files.get(path)
            if body is None:
                self.send_error(404, "Not Found")
                return
            etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            start = 0
            wanted = self.headers.get("Range")
            if site.ranges and wanted and self.headers.get("If-Range") == etag:
                start = int(wanted.removeprefix("bytes=").split("-")[0])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            if site.ranges:
                self.send_header("ETag", etag)
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            cut = site.cut_after.pop(path, None)
            self.wfile.write(body[start:] if cut is None else body[start:start + cut])
            if cut is not None:
                self.close_connection = True

    return Handler


@pytest.fixture()
def site():
    server = ThreadingHTTPServer(("127.0.0.1", 0), None)
    served = Site(base=f"http://127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = _handler(served)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield served
    server.shutdown()
    server.server_close()


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def file_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def link_member(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zipped:
        for name, data in files.items():
            zipped.writestr(name, data)
    return buf.getvalue()


ADAPTER = {"lora/adapter_config.json": b'{"peft_type": "LORA"}', "lora/adapter_model.safetensors": BODY}


def downloads(cache: Path) -> list[Path]:
    """The download folders in the cache (the lock folder aside)."""
    folder = cache / "downloads"
    return [p for p in folder.iterdir() if p.name != ".locks"] if folder.is_dir() else []


# -- plain files and the cache -------------------------------------------------------------------------------------
def test_file_download_then_cache_hit_without_network(site, tmp_path):
    site.files["/models/adapter.gguf"] = BODY
    seen: list[tuple[int, int | None]] = []
    path = sources.fetch(site.url("/models/adapter.gguf"), tmp_path, progress=lambda done, total: seen.append(
        (done, total)))
    assert path.name == "adapter.gguf" and path.read_bytes() == BODY
    assert path.parent.parent == tmp_path / "downloads" and (path.parent / sources.MARKER).is_file()
    assert seen[-1] == (len(BODY), len(BODY))
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".partial")]
    assert sources.fetch(site.url("/models/adapter.gguf"), tmp_path) == path
    assert site.hits("/models/adapter.gguf") == 1


def test_right_sha256_passes_and_a_wrong_one_leaves_nothing(site, tmp_path):
    site.files["/a.gguf"] = BODY
    good = hashlib.sha256(BODY).hexdigest()
    bad = "0" * 64
    with pytest.raises(InvalidRequestError) as caught:
        sources.fetch(site.url("/a.gguf"), tmp_path, sha256=bad)
    assert good in caught.value.message and bad in caught.value.message
    assert downloads(tmp_path) == []
    assert sources.fetch(site.url("/a.gguf"), tmp_path, sha256=good).read_bytes() == BODY
    with pytest.raises(InvalidRequestError, match="not 64 hex digits"):
        sources.fetch(site.url("/a.gguf"), tmp_path, sha256="abc")


def test_cached_copy_with_another_sha256_is_fetched_again(site, tmp_path):
    site.files["/a.gguf"] = BODY
    sources.fetch(site.url("/a.gguf"), tmp_path)
    site.files["/a.gguf"] = BODY[::-1]
    path = sources.fetch(site.url("/a.gguf"), tmp_path, sha256=hashlib.sha256(BODY[::-1]).hexdigest())
    assert path.read_bytes() == BODY[::-1] and site.hits("/a.gguf") == 2


def test_interrupted_download_resumes_with_a_range_request(site, tmp_path):
    site.files["/big.gguf"] = BODY
    site.cut_after["/big.gguf"] = 3000
    with pytest.raises(UpstreamError, match="stopped after 3000 of 10240 bytes"):
        sources.fetch(site.url("/big.gguf"), tmp_path)
    path = sources.fetch(site.url("/big.gguf"), tmp_path)
    assert path.read_bytes() == BODY
    assert site.seen[-1][1].get("Range") == "bytes=3000-"


def test_interrupted_download_restarts_when_the_server_cannot_resume(site, tmp_path):
    site.ranges = False
    site.files["/big.gguf"] = BODY
    site.cut_after["/big.gguf"] = 3000
    with pytest.raises(UpstreamError):
        sources.fetch(site.url("/big.gguf"), tmp_path)
    assert sources.fetch(site.url("/big.gguf"), tmp_path).read_bytes() == BODY
    assert "Range" not in site.seen[-1][1]


def test_partial_left_by_a_changed_file_is_discarded(site, tmp_path):
    site.files["/f.gguf"] = BODY
    site.cut_after["/f.gguf"] = 1000
    with pytest.raises(UpstreamError):
        sources.fetch(site.url("/f.gguf"), tmp_path)
    site.files["/f.gguf"] = BODY[::-1]  # new ETag: If-Range fails, the server sends the whole new body
    assert sources.fetch(site.url("/f.gguf"), tmp_path).read_bytes() == BODY[::-1]


# -- archives ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["lora.tar.gz", "lora.tgz", "lora.tar", "lora.zip"])
def test_archive_with_one_folder_gives_that_folder(site, tmp_path, name):
    if name.endswith(".zip"):
        data = zip_bytes(ADAPTER)
    else:
        data = tar_bytes([file_member(n, d) for n, d in ADAPTER.items()], "w" if name.endswith(".tar") else "w:gz")
    site.files[f"/{name}"] = data
    path = sources.fetch(site.url(f"/{name}"), tmp_path)
    assert path.name == "lora" and path.is_dir()
    assert sorted(p.name for p in path.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert (path / "adapter_model.safetensors").read_bytes() == BODY
    assert not list(path.parent.parent.glob("*.tar*")) and not list(path.parent.parent.glob(".unpack-*"))
    assert sources.fetch(site.url(f"/{name}"), tmp_path) == path and site.hits(f"/{name}") == 1


def test_archive_with_loose_files_gives_the_unpacked_folder(site, tmp_path):
    site.files["/flat.tar.gz"] = tar_bytes([file_member("adapter_config.json", b"{}"), file_member("w.bin", b"x")])
    path = sources.fetch(site.url("/flat.tar.gz"), tmp_path)
    assert path.name == "flat" and sorted(p.name for p in path.iterdir()) == ["adapter_config.json", "w.bin"]


@pytest.mark.parametrize("members, why", [
    ([file_member("lora/ok", b"1"), file_member("../evil", b"x")], "outside the archive folder"),
    ([file_member("lora/../../evil", b"x")], "outside the archive folder"),
    ([file_member("/tmp/evil", b"x")], "outside the archive folder"),
    ([file_member("lora/ok", b"1"), link_member("lora/link", "../../../../etc/passwd")], "symlink"),
    ([link_member("lora/link", "/etc/passwd")], "symlink"),
    ([link_member("lora/hard", "../outside", tarfile.LNKTYPE)], "hard link"),
    ([link_member("lora/dev", "", tarfile.CHRTYPE)], "device"),
], ids=["dotdot", "nested-dotdot", "absolute", "symlink-up", "symlink-absolute", "hardlink", "device"])
def test_unsafe_tar_is_rejected_and_nothing_is_written(site, tmp_path, members, why):
    site.files["/evil.tar.gz"] = tar_bytes(members)
    cache = tmp_path / "cache"
    with pytest.raises(InvalidRequestError, match=f"unsafe.*{why}"):
        sources.fetch(site.url("/evil.tar.gz"), cache)
    assert downloads(cache) == []
    assert not (tmp_path / "evil").exists() and not (tmp_path / "outside").exists()


def test_symlink_inside_the_archive_is_fine(site, tmp_path):
    site.files["/ok.tar.gz"] = tar_bytes([file_member("lora/real", b"1"), link_member("lora/alias", "real")])
    path = sources.fetch(site.url("/ok.tar.gz"), tmp_path)
    assert (path / "alias").read_bytes() == b"1"


def test_unsafe_zip_is_rejected(site, tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zipped:
        zipped.writestr(zipfile.ZipInfo("../evil"), b"x")
    site.files["/evil.zip"] = buf.getvalue()
    with pytest.raises(InvalidRequestError, match="unsafe.*outside"):
        sources.fetch(site.url("/evil.zip"), tmp_path / "cache")
    assert downloads(tmp_path / "cache") == [] and not (tmp_path / "evil").exists()


@pytest.mark.parametrize("name", ["cut.tar.gz", "cut.zip"])
def test_truncated_archive_is_rejected_and_nothing_is_left(site, tmp_path, name):
    whole = zip_bytes(ADAPTER) if name.endswith(".zip") else tar_bytes(
        [file_member(n, d) for n, d in ADAPTER.items()])
    site.files[f"/{name}"] = whole[: len(whole) // 2]
    with pytest.raises(InvalidRequestError, match="truncated or corrupt"):
        sources.fetch(site.url(f"/{name}"), tmp_path)
    assert downloads(tmp_path) == []


# -- HTTP errors and secrets ---------------------------------------------------------------------------------------
def test_404_names_status_and_url_without_the_token(site, tmp_path):
    with pytest.raises(InvalidRequestError) as caught:
        sources.fetch(site.url("/missing.gguf?token=SECRET"), tmp_path)
    message = caught.value.message
    assert "HTTP 404" in message and site.url("/missing.gguf?token=***") in message and "SECRET" not in message
    assert downloads(tmp_path) == []


def test_server_error_is_an_upstream_error(site, tmp_path):
    with pytest.raises(UpstreamError, match="HTTP 500") as caught:
        sources.fetch(site.url("/boom"), tmp_path)
    assert caught.value.upstream_status == 500


def test_unreachable_host_is_an_upstream_error(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(UpstreamError, match="check the URL and the network"):
        sources.fetch(f"http://127.0.0.1:{port}/x.gguf", tmp_path)


def test_userinfo_becomes_basic_auth_and_is_redacted(site, tmp_path):
    site.files["/private.gguf"] = BODY
    url = site.url("/private.gguf").replace("http://", "http://bob:s3cret@")
    assert sources.fetch(url, tmp_path).read_bytes() == BODY
    assert site.seen[-1][1]["Authorization"] == "Basic Ym9iOnMzY3JldA=="
    assert sources.redact_url(url) == site.url("/private.gguf").replace("http://", "http://***@")
    assert sources.redact_url("https://h/p?a=1&b") == "https://h/p?a=***&***"


# -- local paths and mounts ----------------------------------------------------------------------------------------
def test_local_paths_and_file_urls(tmp_path, monkeypatch):
    target = tmp_path / "a.gguf"
    target.write_bytes(BODY)
    assert sources.fetch(str(target), tmp_path / "cache") == target
    assert sources.fetch(target.as_uri(), tmp_path / "cache") == target
    monkeypatch.setenv("HOME", str(tmp_path))
    assert sources.fetch("~/a.gguf", tmp_path / "cache") == target
    assert not (tmp_path / "cache").exists()  # nothing copied
    with pytest.raises(InvalidRequestError, match="does not exist"):
        sources.fetch(str(tmp_path / "nope"), tmp_path / "cache")
    with pytest.raises(InvalidRequestError, match="sha256 of"):
        sources.fetch(str(target), tmp_path / "cache", sha256="1" * 64)


def test_mounted_scheme_maps_through_the_environment(tmp_path, monkeypatch):
    share = tmp_path / "mnt" / "share"
    share.mkdir(parents=True)
    (share / "lora.gguf").write_bytes(BODY)
    monkeypatch.setenv(sources.MOUNTS_ENV, f"nas={tmp_path / 'mnt'}, other=/x")
    assert sources.fetch("nas://share/lora.gguf", tmp_path / "cache") == share / "lora.gguf"
    assert sources.fetch("NAS://share", tmp_path / "cache") == share
    with pytest.raises(InvalidRequestError, match="escapes its mount"):
        sources.fetch("nas://share/../../etc/passwd", tmp_path / "cache")
    with pytest.raises(InvalidRequestError, match="does not exist"):
        sources.fetch("other://missing", tmp_path / "cache")


def test_unmapped_scheme_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(sources.MOUNTS_ENV, "nas=/mnt/nas")
    with pytest.raises(InvalidSpecError, match=f"no mount for scheme 's3'.*{sources.MOUNTS_ENV}=s3="):
        sources.fetch("s3://bucket/lora", tmp_path)
    monkeypatch.setenv(sources.MOUNTS_ENV, "nas")
    with pytest.raises(InvalidSpecError, match="scheme=/absolute/folder"):
        sources.fetch("nas://x", tmp_path)

"""Turn a source string (local path, ``file://``, ``http(s)://`` or a mounted-storage URL) into a local path.

Downloads land in ``CACHE/downloads/<sha256 of the URL>/``: the body is written to a ``.partial`` file, checked,
then renamed (or, for ``.tar``/``.tar.gz``/``.tgz``/``.zip``, unpacked into a temporary folder that is renamed), and
a ``.complete`` marker is written last, so a later fetch of the same URL is a cache hit with no network and a crash
never leaves a half-written result that looks finished. A file lock serialises processes fetching the same URL (two
workers on one node loading the same adapter). An interrupted download resumes with an HTTP ``Range`` request when
the server gave a validator (ETag or Last-Modified) and restarts otherwise. Only the standard library is used.

Mounted storage: ``nas://share/models/x`` is read from ``/mnt/nas/share/models/x`` when the process environment has
``BYZER_LIKE_MOUNTS=nas=/mnt/nas`` (comma-separated ``scheme=folder`` pairs).

Example:
    >>> fetch("https://example.com/lora.tar.gz", Path("/tmp/cache"))  # doctest: +SKIP
    PosixPath('/tmp/cache/downloads/3f1c.../lora')
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator, Mapping

from byzer_like.errors import InvalidRequestError, InvalidSpecError, UpstreamError

logger = logging.getLogger(__name__)

MOUNTS_ENV = "BYZER_LIKE_MOUNTS"
MARKER = ".complete"
CHUNK = 1 << 20
TIMEOUT_S = 60.0
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar", ".zip")
Progress = Callable[[int, "int | None"], None]


def fetch(source: str, cache: Path, *, sha256: str | None = None, progress: Progress | None = None,
          mounts: Mapping[str, str] | None = None) -> Path:
    """A local path for ``source``, downloading and unpacking it into ``cache`` when it is an http(s) URL.

    Args:
        source: A local path (``~`` expanded), a ``file://`` URL, an ``http(s)://`` URL of a file or of a
            ``.tar``/``.tar.gz``/``.tgz``/``.zip`` archive, or ``SCHEME://path`` for a mounted scheme.
        cache: The cache directory; downloads go to ``cache/downloads``.
        sha256: Expected hex digest of the file (of the archive, for archives); checked when given.
        progress: Called with ``(bytes_done, total_or_None)`` while downloading.
        mounts: ``scheme -> folder``; default parsed from ``$BYZER_LIKE_MOUNTS``.

    Returns:
        The local file or folder. An archive holding exactly one top-level folder gives that folder.

    Raises:
        InvalidRequestError: a missing path, an HTTP 4xx, a sha256 mismatch, an unsafe or corrupt archive.
        InvalidSpecError: a scheme with no mount in ``$BYZER_LIKE_MOUNTS``.
        UpstreamError: the server failed (5xx) or could not be reached.
    """
    expected = _normalise_digest(sha256)
    if "://" not in source:
        return _local(Path(source).expanduser(), source, expected)
    parts = urllib.parse.urlsplit(source)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return _download(source, cache, expected, progress)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidRequestError(f"file URL {redact_url(source)} names host '{parts.netloc}'; use "
                                      "file:///absolute/path", param="source")
        return _local(Path(urllib.request.url2pathname(parts.path)), source, expected)
    return _local(_mounted(scheme, parts, source, mounts), source, expected)


def redact_url(url: str) -> str:
    """``url`` without secrets: userinfo becomes ``***`` and every query value becomes ``***``.

    Example:
        >>> redact_url("https://bob:pw@host/a.gguf?token=abc")
        'https://***@host/a.gguf?token=***'
    """
    if "://" not in url:
        return url
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = "&".join(item.split("=", 1)[0] + "=***" if "=" in item else "***"
                     for item in parts.query.split("&") if item)
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def parse_mounts(text: str | None) -> dict[str, str]:
    """``scheme -> folder`` from a ``BYZER_LIKE_MOUNTS`` value such as ``nas=/mnt/nas,other=/x``.

    Raises:
        InvalidSpecError: for an entry that is not ``scheme=/absolute/folder``.
    """
    mounts: dict[str, str] = {}
    for entry in (text or "").split(","):
        if not entry.strip():
            continue
        scheme, sep, folder = entry.partition("=")
        if not sep or not scheme.strip() or not folder.strip().startswith("/"):
            raise InvalidSpecError(f"{MOUNTS_ENV} entry '{entry}' is not scheme=/absolute/folder; write it like "
                                   "nas=/mnt/nas,other=/x", param="source")
        mounts[scheme.strip().lower()] = folder.strip()
    return mounts


# -- local paths and mounts ----------------------------------------------------------------------------------------
def _local(path: Path, source: str, expected: str | None) -> Path:
    if not path.exists():
        raise InvalidRequestError(f"{redact_url(source)} does not exist; give an existing file or folder, or an "
                                  "http(s) URL", param="source")
    if expected is not None:
        if not path.is_file():
            raise InvalidRequestError(f"sha256 can only check a file, and {path} is a folder; drop sha256 or give "
                                      "an archive URL", param="sha256")
        _check_digest(_digest_of(path), expected, source)
    return path


def _mounted(scheme: str, parts: urllib.parse.SplitResult, source: str, mounts: Mapping[str, str] | None) -> Path:
    table = dict(mounts) if mounts is not None else parse_mounts(os.environ.get(MOUNTS_ENV))
    root = table.get(scheme)
    if root is None:
        known = ", ".join(sorted(table)) or "none"
        raise InvalidSpecError(f"no mount for scheme '{scheme}' in {redact_url(source)} (mounted: {known}); set "
                               f"{MOUNTS_ENV}={scheme}=/mnt/{scheme} or use a local path or an http(s) URL",
                               param="source")
    relative = PurePosixPath(urllib.parse.unquote(parts.netloc + parts.path).lstrip("/"))
    base = Path(root).resolve()
    path = (base / relative).resolve()
    if path != base and base not in path.parents:
        raise InvalidRequestError(f"{redact_url(source)} escapes its mount {root}; remove the '..' parts",
                                  param="source")
    return path


# -- downloads -----------------------------------------------------------------------------------------------------
def _download(url: str, cache: Path, expected: str | None, progress: Progress | None) -> Path:
    key = hashlib.sha256(url.encode()).hexdigest()
    downloads = cache / "downloads"
    # NOTE: locks live apart from the download folders, so a failed download can remove its whole folder.
    (downloads / ".locks").mkdir(parents=True, exist_ok=True)
    with _locked(downloads / ".locks" / f"{key}.lock"):
        folder = downloads / key
        hit = _cached(folder, expected)
        if hit is not None:
            logger.debug("cache hit for %s: %s", redact_url(url), hit)
            return hit
        folder.mkdir(exist_ok=True)
        _clear(folder, keep_partial=True)
        name = _file_name(url)
        partial = folder / ".partial"
        try:
            _get(url, partial, progress)
            digest = _digest_of(partial)
            if expected is not None:
                _check_digest(digest, expected, url)
            result = _unpack(partial, folder, name, url) if _is_archive(name) else _place(partial, folder / name)
        except BaseException:
            # NOTE: keep an interrupted body to resume; drop everything else, a wrong or corrupt body included.
            if partial.exists() and not (folder / ".partial.done").exists():
                _clear(folder, keep_partial=True)
            else:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        (folder / ".partial.done").unlink(missing_ok=True)
        (folder / MARKER).write_text(json.dumps({"path": str(result.relative_to(folder)), "sha256": digest,
                                                 "url": redact_url(url)}))
        return result


def _cached(folder: Path, expected: str | None) -> Path | None:
    marker = folder / MARKER
    if not marker.is_file():
        return None
    try:
        record = json.loads(marker.read_text())
        path = folder / record["path"]
    except (ValueError, KeyError, TypeError):
        return None
    if not path.exists() or (expected is not None and record.get("sha256") != expected):
        return None
    return path


def _clear(folder: Path, *, keep_partial: bool = False) -> None:
    """Empty ``folder``, keeping a resumable partial body when asked."""
    keep = {".partial", ".partial.meta"} if keep_partial else set()
    for child in folder.iterdir():
        if child.name in keep:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _get(url: str, partial: Path, progress: Progress | None, *, resume: bool = True) -> None:
    """Download ``url`` into ``partial``, resuming a previous partial body when the server allows it."""
    meta = partial.with_name(".partial.meta")
    request = _request(url)
    done = partial.stat().st_size if partial.exists() and resume else 0
    validator = _read_validator(meta) if done else None
    if validator:
        request.add_header("Range", f"bytes={done}-")
        request.add_header("If-Range", validator)
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)  # noqa: S310 (http(s) only, checked above)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and validator:  # our partial is no prefix of what the server has now: start over
            _forget(partial, meta)
            return _get(url, partial, progress, resume=False)
        raise _http_error(url, exc.code, exc.reason) from None
    except (urllib.error.URLError, OSError) as exc:
        raise _network_error(url, exc) from None
    with response:
        resumed = response.status == 206 and validator is not None and _range_start(response) == done
        if response.status == 206 and validator and not resumed:  # not the range we asked for: start over
            _forget(partial, meta)
            return _get(url, partial, progress, resume=False)
        if not resumed:
            done = 0
        total = _total(response, done)
        meta.write_text(response.headers.get("ETag") or response.headers.get("Last-Modified") or "")
        _stream(response, partial, "ab" if resumed else "wb", done, total, url, progress)
    partial.with_name(".partial.done").write_text("")
    meta.unlink(missing_ok=True)
    return None


def _stream(response: object, partial: Path, mode: str, done: int, total: int | None, url: str,
            progress: Progress | None) -> None:
    with open(partial, mode) as out:
        while True:
            try:
                chunk = response.read(CHUNK)  # type: ignore[attr-defined]
            except (OSError, ValueError) as exc:  # http.client.IncompleteRead is a ValueError
                raise _network_error(url, exc) from None
            if not chunk:
                break
            out.write(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    if total is not None and done < total:
        raise UpstreamError(f"download of {redact_url(url)} stopped after {done} of {total} bytes; fetch again to "
                            "resume", param="source")


def _request(url: str) -> urllib.request.Request:
    """A GET request for ``url``, with userinfo moved into a Basic Authorization header."""
    parts = urllib.parse.urlsplit(url)
    headers = {"User-Agent": "byzer-like"}
    if "@" in parts.netloc:
        userinfo, host = parts.netloc.rsplit("@", 1)
        token = base64.b64encode(urllib.parse.unquote(userinfo).encode()).decode()
        headers["Authorization"] = f"Basic {token}"
        url = urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, ""))
    return urllib.request.Request(url, headers=headers)


def _forget(partial: Path, meta: Path) -> None:
    partial.unlink(missing_ok=True)
    meta.unlink(missing_ok=True)


def _range_start(response: object) -> int | None:
    """The first byte of a 206 body, from ``Content-Range: bytes START-END/TOTAL``."""
    value = response.headers.get("Content-Range", "")  # type: ignore[attr-defined]
    start = value.removeprefix("bytes ").split("-", 1)[0]
    return int(start) if start.isdigit() else None


def _read_validator(meta: Path) -> str | None:
    try:
        return meta.read_text().strip() or None
    except OSError:
        return None


def _total(response: object, done: int) -> int | None:
    length = response.headers.get("Content-Length")  # type: ignore[attr-defined]
    return done + int(length) if length and length.isdigit() else None


def _http_error(url: str, code: int, reason: object) -> Exception:
    where = redact_url(url)
    if code in (401, 403):
        return InvalidRequestError(f"downloading {where} failed: HTTP {code} {reason}; check the credentials in the "
                                   "URL or that the file is public", param="source")
    if 400 <= code < 500:
        return InvalidRequestError(f"downloading {where} failed: HTTP {code} {reason}; check the URL",
                                   param="source")
    return UpstreamError(f"downloading {where} failed: HTTP {code} {reason}; the server failed, try again later",
                         param="source", upstream_status=code)


def _network_error(url: str, exc: BaseException) -> Exception:
    reason = getattr(exc, "reason", None) or exc
    return UpstreamError(f"downloading {redact_url(url)} failed: {type(exc).__name__}: {reason}; check the URL and "
                         "the network, then fetch again", param="source")


def _file_name(url: str) -> str:
    name = PurePosixPath(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    return name if name and name not in (".", "..") and not name.startswith(".") else "download"


def _is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def _archive_stem(name: str) -> str:
    lower = name.lower()
    for suffix in ARCHIVE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return "unpacked"


def _place(partial: Path, final: Path) -> Path:
    os.replace(partial, final)
    return final


# -- digests -------------------------------------------------------------------------------------------------------
def _normalise_digest(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    digest = sha256.strip().lower().removeprefix("sha256:")
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise InvalidRequestError(f"sha256 '{sha256}' is not 64 hex digits; give the file's sha256 hex digest",
                                  param="sha256")
    return digest


def _digest_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_digest(actual: str, expected: str, source: str) -> None:
    if actual != expected:
        raise InvalidRequestError(f"sha256 of {redact_url(source)} is {actual}, expected {expected}; check the "
                                  "source and the sha256", param="sha256")


# -- archives ------------------------------------------------------------------------------------------------------
def _unpack(archive: Path, folder: Path, name: str, url: str) -> Path:
    """Unpack ``archive`` safely into ``folder/<stem>``; the one top-level folder inside, if there is just one."""
    staging = Path(tempfile.mkdtemp(dir=folder, prefix=".unpack-"))
    try:
        if name.lower().endswith(".zip"):
            _unzip(archive, staging, url)
        else:
            _untar(archive, staging, url)
        final = folder / _archive_stem(name)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    archive.unlink()
    entries = [p for p in final.iterdir() if p.name != "__MACOSX"]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink() else final


def _unsafe(url: str, member: str, why: str) -> InvalidRequestError:
    return InvalidRequestError(f"archive {redact_url(url)} is unsafe: member '{member}' {why}; rebuild the archive "
                               "with relative paths inside one folder", param="source")


def _corrupt(url: str, exc: BaseException) -> InvalidRequestError:
    return InvalidRequestError(f"archive {redact_url(url)} is truncated or corrupt ({type(exc).__name__}: {exc}); "
                               "check the file or download it again", param="source")


def _inside(root: Path, relative: str) -> bool:
    """True when ``relative`` (a posix path) stays inside ``root`` after normalisation."""
    if relative.startswith(("/", "\\")) or (len(relative) > 1 and relative[1] == ":"):
        return False
    target = os.path.normpath(os.path.join(root, relative))
    return target == str(root) or target.startswith(str(root) + os.sep)


def _untar(archive: Path, dest: Path, url: str) -> None:
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()  # reads to the end: a truncated archive fails here, before any write
            for member in members:
                _check_tar_member(member, dest, url)
            tar.extractall(dest, members=members, filter="data")
    except tarfile.FilterError as exc:  # what the checks above missed, the stdlib "data" filter still refuses
        raise _unsafe(url, exc.tarinfo.name, str(exc)) from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise _corrupt(url, exc) from None


def _check_tar_member(member: tarfile.TarInfo, dest: Path, url: str) -> None:
    if not _inside(dest, member.name):
        raise _unsafe(url, member.name, "points outside the archive folder")
    if member.isdev() or not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise _unsafe(url, member.name, "is a device or special file")
    if member.issym():
        link_from = os.path.dirname(member.name)
        if os.path.isabs(member.linkname) or not _inside(dest, os.path.join(link_from, member.linkname)):
            raise _unsafe(url, member.name, f"is a symlink to '{member.linkname}' outside the archive folder")
    if member.islnk() and not _inside(dest, member.linkname):
        raise _unsafe(url, member.name, f"is a hard link to '{member.linkname}' outside the archive folder")


def _unzip(archive: Path, dest: Path, url: str) -> None:
    try:
        with zipfile.ZipFile(archive) as zipped:
            infos = zipped.infolist()
            for info in infos:
                if not _inside(dest, info.filename):
                    raise _unsafe(url, info.filename, "points outside the archive folder")
                kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip tool recorded no unix file type
                if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                    raise _unsafe(url, info.filename, "is a link or special file (zip archives must hold plain files)")
            for info in infos:
                zipped.extract(info, dest)  # CRC is checked while reading: a corrupt member raises BadZipFile
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, OSError) as exc:
        raise _corrupt(url, exc) from None

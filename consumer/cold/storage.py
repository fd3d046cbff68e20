"""Where the cold tier lives: ARCHIVER_COLD_URL as a pyarrow filesystem and a base path.

`file:///path` is a local (or mounted) directory; `s3://bucket/prefix` is S3 or an
S3-compatible store (ARCHIVER_S3_ENDPOINT_URL, e.g. http://minio:9000), with the standard
AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION) read by pyarrow's S3
client (its default credential chain: an instance profile works too). pyarrow signs every
request: nothing here builds one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pyarrow import fs

from consumer import exceptions, urls

S3_RETRIES = 3  # attempts per request before an S3 error fails the export (the next run redoes it)
S3_TIMEOUT_S = 10.0


class ColdStorageError(exceptions.ArchiverError):
    """The cold tier's storage failed."""


@dataclass(frozen=True, slots=True)
class Storage:
    """A filesystem and the base path of the cold tier in it; `url` names it for people."""

    filesystem: fs.FileSystem
    base: str
    url: str

    def path(self, relative: str) -> str:
        return f"{self.base}/{relative}" if relative else self.base

    def url_of(self, relative: str) -> str:
        return f"{self.url.rstrip('/')}/{relative}"


def open_url(url: str, endpoint: str | None = None) -> Storage:
    """The storage ARCHIVER_COLD_URL names (`endpoint`: an S3-compatible server's URL)."""
    parts = urlsplit(urls.check_cold_url(url))
    if parts.scheme == "file":
        return Storage(fs.LocalFileSystem(), parts.path.rstrip("/") or "/", url)
    base = f"{parts.netloc}/{parts.path.strip('/')}".rstrip("/")
    return Storage(s3(endpoint), base, url)


def s3(endpoint: str | None) -> fs.S3FileSystem:
    """pyarrow's S3 client; an endpoint URL points it at an S3-compatible server."""
    options: dict[str, object] = {
        "region": os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or "us-east-1",
        "connect_timeout": S3_TIMEOUT_S,
        "request_timeout": S3_TIMEOUT_S,
        "retry_strategy": fs.AwsStandardS3RetryStrategy(max_attempts=S3_RETRIES),
    }
    if endpoint:
        target = urlsplit(endpoint)
        options |= {"endpoint_override": target.netloc, "scheme": target.scheme or "https"}
    return fs.S3FileSystem(**options)


def exists(storage: Storage, relative: str) -> bool:
    info = storage.filesystem.get_file_info(storage.path(relative))
    return bool(info.type != fs.FileType.NotFound)


def write_bytes(storage: Storage, relative: str, data: bytes) -> None:
    """A small object (a manifest): one PUT on S3 (atomic), a write and rename locally."""
    local = isinstance(storage.filesystem, fs.LocalFileSystem)
    staged = f"{relative}.tmp" if local else relative
    make_dirs(storage, relative.rsplit("/", 1)[0])
    with write_stream(storage, staged) as out:
        out.write(data)
    if local:
        storage.filesystem.move(storage.path(staged), storage.path(relative))


def read_bytes(storage: Storage, relative: str) -> bytes:
    with read_stream(storage, relative) as stream:
        data: bytes = stream.read()
    return data


def write_stream(storage: Storage, relative: str) -> Any:
    """A stream writing a file's bytes as given (pyarrow would otherwise compress a name
    ending in .zst or .gz itself)."""
    return storage.filesystem.open_output_stream(storage.path(relative), compression=None)


def read_stream(storage: Storage, relative: str) -> Any:
    """A stream reading a file's bytes as stored (never decompressed by its name)."""
    return storage.filesystem.open_input_stream(storage.path(relative), compression=None)


def files_in(storage: Storage, relative: str, prefix: str) -> list[str]:
    """The files directly in a directory whose names start with `prefix` (full paths)."""
    selector = fs.FileSelector(storage.path(relative), allow_not_found=True)
    return sorted(
        info.path
        for info in storage.filesystem.get_file_info(selector)
        if info.type == fs.FileType.File and info.base_name.startswith(prefix)
    )


def make_dirs(storage: Storage, relative: str) -> None:
    """Directories for a local path (S3 has none to make)."""
    if isinstance(storage.filesystem, fs.LocalFileSystem):
        storage.filesystem.create_dir(storage.path(relative), recursive=True)


def remove_tree(storage: Storage, relative: str) -> None:
    """Everything under `relative` (an interrupted export's staged files), if anything."""
    path = storage.path(relative)
    if storage.filesystem.get_file_info(path).type != fs.FileType.NotFound:
        storage.filesystem.delete_dir(path)


def failure(where: Storage, exc: BaseException) -> ColdStorageError:
    """A storage error for people: what failed, and which settings to check."""
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return ColdStorageError(
        f"the cold tier at {where.url} failed ({type(exc).__name__}: {reason}): check"
        " ARCHIVER_COLD_URL, ARCHIVER_S3_ENDPOINT_URL and the AWS_* variables"
    )

"""Server URLs in settings: checked by scheme when given, and shown without their password."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

from pydantic import AfterValidator

REDIS_SCHEMES = ("redis", "rediss", "unix")
POSTGRES_SCHEMES = ("postgresql", "postgres")


def redact(url: str) -> str:
    """The URL with its password replaced by ***, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _checker(schemes: tuple[str, ...], what: str, example: str) -> AfterValidator:
    def check(url: str) -> str:
        try:
            scheme = urlsplit(url).scheme.lower()
        except ValueError:
            scheme = ""
        if scheme not in schemes:
            raise ValueError(f"not a {what} URL: {redact(url)!r} (use e.g. {example})")
        return url

    return AfterValidator(check)


_REDIS = _checker(REDIS_SCHEMES, "Redis", "redis://HOST:6379/0, rediss://… or unix:///path")
_POSTGRES = _checker(POSTGRES_SCHEMES, "PostgreSQL", "postgresql://USER@HOST:5432/DATABASE")
RedisUrl = Annotated[str, _REDIS]
DatabaseUrl = Annotated[str, _POSTGRES]


def is_url_type(metadata: list[object]) -> bool:
    """Whether a setting's annotations make it one of the URL types above."""
    return any(m is _REDIS or m is _POSTGRES for m in metadata)


# --- the cold tier (consumer/cold/storage.py) ---

COLD_SCHEMES = ("file", "s3")


def check_cold_url(url: str) -> str:
    """ARCHIVER_COLD_URL as given, if it is file:///path or s3://bucket[/prefix]."""
    parts = urlsplit(url)
    if parts.scheme not in COLD_SCHEMES:
        raise ValueError(f"not a cold tier URL: {url!r} (use file:///path or s3://bucket/prefix)")
    if parts.scheme == "file" and (parts.netloc or not parts.path.startswith("/")):
        raise ValueError(f"a file URL needs an absolute path: file:///path, not {url!r}")
    if parts.scheme == "s3" and not parts.netloc:
        raise ValueError(f"an S3 URL names its bucket: s3://bucket/prefix, not {url!r}")
    return url

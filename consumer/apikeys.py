"""API keys of the History API (table api_keys, sql/0007_api.sql): created, listed and revoked
by the schema owner (`archiver api-keys`), checked by the API by their hash.

A key is `cak_` and 256 random bits (URL-safe base64), shown once when created; only its
SHA-256 is stored. A key belongs to one tenant and carries scopes: `read` (the history
endpoints) and `erase` (erasure requests)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg

from consumer import exceptions, queries, settings, terminal

KEY_PREFIX = "cak_"
SHOWN = 12  # characters of a key kept to tell keys apart in listings
SCOPES = ("read", "erase")
NEVER = frozenset({"never", "none", "off", ""})


@dataclass(frozen=True, slots=True)
class Created:
    """A new key (shown once) and its row."""

    key: str
    item: dict[str, Any]


def generate() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(key: str) -> bytes:
    """SHA-256 of the key as presented (any text; a header's characters are latin-1)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def parse_scopes(text: str) -> list[str]:
    """'read' or 'read,erase'; UsageError for anything else."""
    wanted = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [s for s in wanted if s not in SCOPES]
    if not wanted or unknown:
        raise exceptions.UsageError(f"--scope: give {' or '.join(SCOPES)}, comma-separated")
    return sorted(set(wanted), key=SCOPES.index)


def parse_expires(text: str | None) -> timedelta | None:
    """'90d', '12h' (a duration from now, by PostgreSQL's clock), or never/None."""
    if text is None or text.strip().lower() in NEVER:
        return None
    try:
        seconds = settings.parse_duration(text)
    except ValueError as exc:
        raise exceptions.UsageError(f"--expires: {exc}") from None
    if seconds <= 0:
        raise exceptions.UsageError("--expires: give a duration after now, e.g. 90d")
    return timedelta(seconds=seconds)


def _item(row: asyncpg.Record) -> dict[str, Any]:
    return dict(row) | {"scopes": list(row["scopes"])}


async def create(
    conn: asyncpg.Connection, tenant: str, name: str, scopes: list[str], expires: timedelta | None
) -> Created:
    if not tenant or not name:
        raise exceptions.UsageError("--tenant and --name cannot be empty")
    key = generate()
    row = await conn.fetchrow(
        queries.get("api_key_create"), tenant, name, key[:SHOWN], digest(key), scopes, expires
    )
    assert row is not None
    return Created(key, _item(row))


async def listing(conn: asyncpg.Connection, tenant: str | None) -> list[dict[str, Any]]:
    return [_item(row) for row in await conn.fetch(queries.get("api_keys_list"), tenant)]


async def revoke(conn: asyncpg.Connection, key_id: int) -> dict[str, Any]:
    row = await conn.fetchrow(queries.get("api_key_revoke"), key_id)
    if row is None:
        raise exceptions.NotFoundError(f"no API key {key_id} (see `archiver api-keys list`)")
    return _item(row)


COLUMNS = [
    terminal.column("id", "id", "number"),
    terminal.column("tenant", "tenant_id", "id"),
    terminal.column("name", "name"),
    terminal.column("key", "prefix", "id"),
    terminal.Column("scopes", lambda row: ",".join(row["scopes"])),
    terminal.column("state", "state"),
    terminal.column("created", "created_at", "time", drop=1),
    terminal.column("expires", "expires_at", "time"),
]

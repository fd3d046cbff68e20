"""Who is asking: `Authorization: Bearer <key>`, checked in the same transaction as the read.

A request without a key is refused (401) before anything else. The key is looked up by its
hash (`archiver_api_key`, the API role's only view of api_keys), which in the same statement
names the key's tenant for the rest of the transaction: row-level security then shows only
that tenant's rows. Unknown, revoked or expired keys are 401 alike; a missing scope is 403."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from consumer import apikeys, queries
from consumer.api import problems

Connection = asyncpg.Connection | PoolConnectionProxy
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="archiver"'}
_BEARER = HTTPBearer(auto_error=False, description="An API key: `archiver api-keys create`.")


@dataclass(frozen=True, slots=True)
class Session:
    """One request's transaction, as the key's tenant."""

    conn: Connection
    tenant: str
    key_id: int


def unauthorized(detail: str) -> problems.Problem:
    return problems.Problem(401, detail, CHALLENGE)


async def presented_key(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
) -> str:
    """The key of the Authorization header (a dependency: 401 before anything else; async so
    that FastAPI runs it inline, not in a worker thread)."""
    if credentials is None or not credentials.credentials:
        raise unauthorized("an API key is required: Authorization: Bearer <key>")
    return credentials.credentials


async def _tenant_of(conn: Connection, key: str) -> tuple[str, int, list[str]]:
    row = await conn.fetchrow(queries.get("api_authenticate"), apikeys.digest(key))
    if row is None:
        raise unauthorized("the API key is unknown, revoked or expired")
    return row["tenant_id"], row["key_id"], list(row["scopes"])


@asynccontextmanager
async def session(
    request: Request, key: str, scope: str, *, write: bool = False
) -> AsyncIterator[Session]:
    """A transaction as the tenant of `key` (read-only unless `write`), if the key holds
    `scope`."""
    pool: asyncpg.Pool = request.app.state.pool
    # a busy pool answers 503 after the timeout (TimeoutError), rather than queueing for ever
    async with (
        pool.acquire(timeout=request.app.state.timeout) as conn,
        conn.transaction(readonly=not write),
    ):
        tenant, key_id, scopes = await _tenant_of(conn, key)
        if scope not in scopes:
            raise problems.Problem(403, f"this API key lacks the {scope!r} scope")
        yield Session(conn, tenant, key_id)

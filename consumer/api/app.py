"""The FastAPI application: its routes, its problem details, and a pool of connections as the
API's own role (created with the application, opened on demand, closed with it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import asyncpg
from fastapi import FastAPI

from consumer import __version__
from consumer.api import problems, routes

# Every read names its tenant, customer or user; a plan made for one value (custom) beats a
# generic plan over the `$n IS NULL OR ...` filters.
SERVER_SETTINGS = {
    "application_name": "archiver-api",
    "plan_cache_mode": "force_custom_plan",
}
DESCRIPTION = """Read a tenant's archived conversation history.

Every `/v1` request needs `Authorization: Bearer <key>` (`archiver api-keys create`). A key
belongs to one tenant: another tenant's conversations, customers and users are 404, exactly
as if they did not exist. Errors are RFC 9457 problem details. Lists are pages: give a page's
`next_cursor` as `cursor` to get the next one."""


async def _as_it_is(_: asyncpg.Connection) -> None:
    """A connection goes back to the pool without asyncpg's reset (RESET ALL, UNLISTEN *, CLOSE
    ALL, advisory locks: a round trip per request): the API keeps no state on a connection. Its
    tenant is set per transaction (set_config(..., true)) and ends with it; it sets nothing
    for the session, listens to nothing, holds no cursor or lock outside a transaction. asyncpg
    still rolls back a transaction left open before it calls this."""


@dataclass(frozen=True, slots=True)
class Config:
    database_url: str
    pool_size: int = 10
    timeout: float = 5.0
    erasure_key: bytes | None = field(default=None, repr=False)  # ARCHIVER_ERASURE_KEY


async def open_pool(config: Config) -> asyncpg.Pool:
    """The API's connections: opened on demand, up to `pool_size`."""
    return await asyncpg.create_pool(
        config.database_url, min_size=0, max_size=config.pool_size,
        command_timeout=config.timeout, timeout=config.timeout,
        server_settings=SERVER_SETTINGS, reset=_as_it_is,
    )  # fmt: skip


def create(config: Config) -> FastAPI:
    @asynccontextmanager
    async def lifespan(application: FastAPI) -> AsyncIterator[None]:
        application.state.pool = await open_pool(config)
        try:
            yield
        finally:
            await application.state.pool.close()

    application = FastAPI(
        title="conversation-archiver History API", version=__version__,
        description=DESCRIPTION, lifespan=lifespan,
    )  # fmt: skip
    application.state.erasure_key = config.erasure_key
    application.state.timeout = config.timeout  # also the longest wait for a pooled connection
    problems.install(application)
    application.include_router(routes.v1)
    application.include_router(routes.probes)
    return application

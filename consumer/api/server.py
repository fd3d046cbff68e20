"""Serving the API: checks before listening, then uvicorn with a guard on idle connections.

Before it listens, `serve` checks that the database's schema is current and that its role
could not see another tenant's rows (not a superuser, no BYPASSRLS, owns no table, holds
neither archiver_writer nor archiver_reader): isolation must not depend on the deployment
getting every grant right.

uvicorn closes an idle connection only after a response (`timeout_keep_alive`); a connection
that never completes its first request would stay open for ever. `GuardedHttpToolsProtocol`
closes any connection that has not sent a complete request head within the idle timeout, also
before its first request and also when it trickles a byte at a time (as the consumer's aiohttp
server does, consumer/web.py).

HTTP is parsed by httptools and the event loop is uvloop (both C; uvloop is not on Windows,
where asyncio's loop serves): in a profile of a request sequence, h11 took about a fifth of the
server's CPU; uvloop alone cut its instructions per request by 17%, httptools then another 16%
(callgrind; README, History API)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from consumer import exceptions, migrate, queries
from consumer.api import app


@dataclass(frozen=True, slots=True)
class Listen:
    host: str
    port: int
    idle_timeout: float


async def preflight(config: app.Config) -> None:
    """ConfigError if this database or role must not serve the API (see the module docstring)."""
    conn = await asyncpg.connect(config.database_url, timeout=config.timeout)
    try:
        await migrate.ensure_current(conn)
        problems = await conn.fetchval(queries.get("api_role_problems"))
    finally:
        await conn.close()
    if problems:
        raise exceptions.ConfigError(
            f"the API's database role {', '.join(problems)}: it could read every tenant's rows."
            " Connect as a login role that holds only archiver_api (ARCHIVER_API_DATABASE_URL;"
            " ops/OPERATIONS.md, History API)"
        )


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections without a complete request head in
    time."""

    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        waiting_after = self.cycle  # a complete request head replaces the cycle
        self._deadline = self.loop.call_later(self.timeout_keep_alive, self._expire, waiting_after)

    def _expire(self, waiting_after: object) -> None:
        if self.cycle is waiting_after and not self.transport.is_closing():
            self.transport.close()


def uvicorn_config(config: app.Config, listen: Listen) -> uvicorn.Config:
    return uvicorn.Config(
        app.create(config), host=listen.host, port=listen.port, http=GuardedHttpToolsProtocol,
        timeout_keep_alive=max(1, round(listen.idle_timeout)), access_log=False,
        log_config=None, lifespan="on", server_header=False, loop="auto",  # uvloop where installed
    )  # fmt: skip


def serve(config: app.Config, listen: Listen) -> None:
    """Check, then serve until SIGINT/SIGTERM (uvicorn's handlers: finish requests, then stop)."""
    asyncio.run(preflight(config))
    uvicorn.Server(uvicorn_config(config, listen)).run()

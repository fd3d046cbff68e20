"""Private servers for a fault run: one PostgreSQL (a migrated database per scenario) and a
Redis per scenario (each scenario needs its own configuration). Never the system servers."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from pathlib import Path

from consumer.demo import embedded as servers

TEMPLATE = "faults_template"
PG_SETTINGS = {
    "log_lock_waits": "on",
    "deadlock_timeout": "200ms",
    "log_line_prefix": "%m [%p] %d ",
    "log_min_duration_statement": "1000",
}


class Cluster:
    """The PostgreSQL server of a run (ours, or one lent by a caller, e.g. a test fixture)."""

    def __init__(self, workdir: Path, pg: servers.PostgresServer | None = None) -> None:
        self.workdir = workdir
        self.owned = pg is None
        self.pg = (
            pg if pg is not None else servers.PostgresServer(workdir / "pg", settings=PG_SETTINGS)
        )
        self._template_ready = False

    def start(self) -> None:
        if self.owned:
            self.pg.start()

    def close(self) -> None:
        if self.owned:
            self.pg.cleanup()

    async def database(self, name: str) -> str:
        """A fresh, migrated database; returns its DSN."""
        if not self._template_ready:
            await self._template()
        db = f"f_{name}_{uuid.uuid4().hex[:8]}"
        await servers.create_database(self.pg.dsn(), db, template=TEMPLATE, owner=servers.PG_OWNER)
        return self.pg.dsn(db)

    def writer_url(self, database_url: str) -> str:
        """The same database as the archiver's least-privilege login role (archiver_writer)."""
        return self.pg.dsn(database_url.rsplit("/", 1)[1], user=servers.PG_WRITER)

    async def _template(self) -> None:
        await servers.drop_database(self.pg.dsn(), TEMPLATE)
        await servers.create_migrated_database(self.pg, TEMPLATE)
        self._template_ready = True

    def redis(
        self, name: str, *, appendonly: bool = False, extra_config: Sequence[str] = ()
    ) -> servers.RedisServer:
        server = servers.RedisServer(
            self.workdir / name / "redis", appendonly=appendonly, extra_config=extra_config
        )
        server.start()
        return server

"""The demo's sandbox: a data folder (`.archiver/` by default) holding a private Redis and
PostgreSQL on free ports of 127.0.0.1, recorded in `servers.json` so that servers kept by
`archiver demo --keep` can be stopped (`--stop`) or removed with the folder (`--clean`) later.

The system servers (6379/5432) are never touched: only pids recorded here, and only while
their command line still names the port or data directory they were started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson

from consumer import exceptions
from consumer.demo import embedded

MARKER = ".archiver-demo"
STATE = "servers.json"
DATABASE = "archiver"
_RUN_FILES = ("redis", "postgres", "demo.log", "health.json")

Server = embedded.RedisServer | embedded.PostgresServer


class SandboxError(exceptions.ArchiverError):
    """The demo's data folder cannot be used."""


@dataclass(frozen=True, slots=True)
class Recorded:
    """A server the demo started, as servers.json records it."""

    name: str
    pid: int
    port: int
    url: str
    marker: str
    signal: int

    @property
    def running(self) -> bool:
        return embedded.pid_runs(self.pid, self.marker)


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the demo's consumer connects, and which servers it started itself."""

    redis_url: str
    database_url: str
    started: list[Recorded] = field(default_factory=list)
    temporary: list[Path] = field(default_factory=list)


# --- the state file ------------------------------------------------------------------------------


def _write_state(data_dir: Path, ends: Endpoints) -> None:
    state = {
        "servers": [asdict(r) for r in ends.started],
        "temporary": [str(p) for p in ends.temporary],
    }
    (data_dir / STATE).write_bytes(orjson.dumps(state, option=orjson.OPT_INDENT_2))


def _read_state(data_dir: Path) -> tuple[list[Recorded], list[Path]]:
    try:
        state = orjson.loads((data_dir / STATE).read_bytes())
        servers = [Recorded(**entry) for entry in state["servers"]]
        return servers, [Path(p) for p in state["temporary"]]
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
        return [], []


def left_running(data_dir: Path) -> list[Recorded]:
    """Servers of this folder still up (kept by --keep, or orphaned by a killed demo)."""
    return [r for r in _read_state(data_dir)[0] if r.running]


# --- preparing, stopping, cleaning ---------------------------------------------------------------


def _is_ours(data_dir: Path) -> bool:
    return (data_dir / MARKER).is_file() or not any(data_dir.iterdir())


def prepare(data_dir: Path) -> None:
    """Make the folder ready for a fresh run: created, marked, emptied of an earlier run."""
    if data_dir.exists() and not _is_ours(data_dir):
        raise SandboxError(f"{data_dir} is not empty and not a demo data folder: pick another")
    running = left_running(data_dir) if data_dir.exists() else []
    if running:
        names = ", ".join(f"{r.name} (pid {r.pid})" for r in running)
        raise SandboxError(
            f"servers kept by an earlier `archiver demo --keep` still run in {data_dir}: {names};"
            f" stop them with `archiver demo --stop{_dir_flag(data_dir)}` or remove everything"
            f" with `--clean`"
        )
    _remove_runs(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / MARKER).touch()


def _remove_runs(data_dir: Path) -> None:
    for directory in _read_state(data_dir)[1]:
        shutil.rmtree(directory, ignore_errors=True)
    (data_dir / STATE).unlink(missing_ok=True)
    for name in _RUN_FILES:
        path = data_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def stop(data_dir: Path) -> list[Recorded]:
    """Stop every recorded server still running, and delete a cluster kept outside the folder
    (a temporary directory: nothing else would ever remove it); which servers were stopped."""
    servers, temporary = _read_state(data_dir)
    stopped = []
    for r in servers:
        if embedded.stop_process(r.pid, r.marker, signal.Signals(r.signal)):
            stopped.append(r)
    if temporary and not [r for r in servers if r.running]:
        for directory in temporary:
            shutil.rmtree(directory, ignore_errors=True)
        _write_state(data_dir, Endpoints("", "", servers, []))
    return stopped


def clean(data_dir: Path) -> list[Recorded]:
    """Stop the folder's servers and delete it; what was stopped. Refuses a foreign folder."""
    if not data_dir.exists():
        return []
    if not _is_ours(data_dir):
        raise SandboxError(f"{data_dir} is not a demo data folder (no {MARKER}): not removing it")
    temporary = _read_state(data_dir)[1]
    stopped = stop(data_dir)
    for directory in temporary:
        shutil.rmtree(directory, ignore_errors=True)
    shutil.rmtree(data_dir)
    return stopped


def _dir_flag(data_dir: Path) -> str:
    return "" if data_dir == Path(".archiver") else f" --data-dir {data_dir}"


# --- running -------------------------------------------------------------------------------------


def _postgres(data_dir: Path, keep: bool) -> embedded.PostgresServer:
    workdir = data_dir / "postgres"
    cluster = workdir / "cluster"
    reachable = embedded.server_user_can_reach(workdir)
    return embedded.PostgresServer(
        workdir, base_dir=cluster if reachable else None, persistent=keep
    )


def _redis(data_dir: Path, keep: bool, stack: bool) -> embedded.RedisServer:
    if not stack:
        return embedded.RedisServer(data_dir / "redis", persistent=keep)
    binary, modules = embedded.redis_stack()
    return embedded.RedisServer(data_dir / "redis", persistent=keep, binary=binary, modules=modules)


def _record(server: Server) -> Recorded:
    if isinstance(server, embedded.RedisServer):
        marker, url = f"{embedded.HOST}:{server.port}", server.url
    else:
        marker, url = str(server.data_dir), server.dsn(DATABASE)
    return Recorded(server.name, server.pid, server.port, url, marker, int(server.stop_signal))


def _stop(server: Server) -> None:
    if isinstance(server, embedded.PostgresServer):
        server.cleanup()
    else:
        server.stop()


def _temporary(postgres: embedded.PostgresServer | None, data_dir: Path) -> list[Path]:
    """A cluster outside the data folder (its user could not reach it), to delete later."""
    if postgres is None or postgres.base_dir.is_relative_to(data_dir.resolve()):
        return []
    return [postgres.base_dir]


@contextlib.contextmanager
def running(
    data_dir: Path,
    redis_url: str | None,
    database_url: str | None,
    keep: bool,
    redis_stack: bool = False,
) -> Iterator[Endpoints]:
    """Start the servers no URL was given for (Redis Stack if `redis_stack`); stop them on
    leaving, unless `keep`."""
    redis = None if redis_url else _redis(data_dir, keep, redis_stack)
    postgres = None if database_url else _postgres(data_dir, keep)
    started: list[Server] = [s for s in (redis, postgres) if s is not None]
    with contextlib.ExitStack() as stack:
        for server in started:
            server.start()
            stack.callback(_stop, server)
        if postgres is not None:
            asyncio.run(embedded.create_database(postgres.dsn(), DATABASE))
        ends = Endpoints(
            redis_url or (redis.url if redis else ""),
            database_url or (postgres.dsn(DATABASE) if postgres else ""),
            [_record(s) for s in started],
            _temporary(postgres, data_dir),
        )
        _write_state(data_dir, ends)
        stack.callback((data_dir / STATE).unlink, missing_ok=True)
        yield ends
        if keep:
            for server in started:
                server.detach()
            stack.pop_all()

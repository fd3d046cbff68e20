"""Private Redis and PostgreSQL servers: for the test suite and for `archiver demo`.

Every server runs as a child of the calling process, on a free port of 127.0.0.1 and in
a directory of its own, so a caller can stop, kill (SIGKILL), pause (SIGSTOP), resume
and restart it without touching the system servers on 6379/5432.

Binaries are looked up once per server object; a missing one raises
``ServerBinaryNotFoundError`` (the suite fails, it never skips):

* Redis: ``$ARCHIVER_TEST_REDIS_SERVER``, else ``redis-server`` on ``PATH``, else
  ``/usr/bin/redis-server``.
* PostgreSQL: the directory ``$ARCHIVER_TEST_PG_BIN``, else ``pg_config --bindir``,
  else the newest ``/usr/lib/postgresql/*/bin``, else the directory of ``postgres`` on
  ``PATH``. It must hold ``postgres``, ``initdb`` and ``pg_isready``.

PostgreSQL refuses to run as root. When the caller runs as root, ``initdb`` and
``postgres`` run as the ``postgres`` system user. Because the caller's workdir may sit
below a 0700 directory (``/tmp/pytest-of-root``) that this user cannot traverse, the
cluster (``data/``) and its Unix socket directory (``sock/``) live by default in a
directory made with ``tempfile.mkdtemp(prefix="archiver-pg-")`` and owned by the server
user; the caller's workdir keeps only the logs (opened by the caller, so always writable).
That directory survives ``stop``/``kill``/``restart`` (the data is kept) and is removed
by ``cleanup()``, by leaving the ``with`` block, or at interpreter exit at the latest.
A caller may instead name the cluster's directory (``base_dir``, checked with
``server_user_can_reach``); that one is the caller's and is never removed here.

Servers started from the main thread get PR_SET_PDEATHSIG=SIGKILL, so they die with the
calling process even when it is SIGKILLed; a finalizer also kills them at interpreter exit.
A ``persistent`` server gets no death signal, and ``detach()`` disarms its finalizer: it
outlives its caller, and ``stop_process`` stops it later from another process.
"""

from __future__ import annotations

import abc
import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import asyncpg

from consumer import migrate

__all__ = [
    "PG_API",
    "PG_OWNER",
    "PG_WRITER",
    "PostgresServer",
    "RedisServer",
    "ServerBinaryNotFoundError",
    "create_database",
    "create_migrated_database",
    "create_roles",
    "descendants",
    "drop_database",
    "free_port",
    "pid_alive",
    "pid_runs",
    "quote_ident",
    "server_user_can_reach",
    "session_members",
    "stop_process",
    "wait_until",
]

HOST = "127.0.0.1"
REDIS_START_TIMEOUT = 10.0
PG_START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
SETTLE_TIMEOUT = 10.0
POLL_INTERVAL = 0.05
PG_SUPERUSER = "postgres"
# The least-privilege roles of sql/0003_roles.sql as a deployment uses them: a non-superuser
# owner runs the migrations and owns the schema; the archiver logs in as a role that holds
# only archiver_writer (see ops/OPERATIONS.md, "PostgreSQL roles").
PG_OWNER = "archiver_owner"
PG_WRITER = "archiver_app"
# The History API's login role: holds only archiver_api (sql/0007_api.sql).
PG_API = "archiver_api_app"
PG_SYSTEM_USER = "postgres"
_PR_SET_PDEATHSIG = 1
_DEAD_STATES = frozenset({"Z", "X", "x"})
_STOPPED_STATES = frozenset({"T", "t"})


class ServerBinaryNotFoundError(RuntimeError):
    """A server binary needed here is not installed (or not where configured)."""


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    """Return a TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``predicate`` until it is true; raise ``TimeoutError`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(POLL_INTERVAL)


def _port_accepts(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log file at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process from /proc/<pid>/stat, or None if it is gone."""
    fields = _stat_fields(pid)
    return None if fields is None else (fields[0], int(fields[1]))


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie (orphans are not always reaped)."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in _DEAD_STATES


def _is_stopped(pid: int) -> bool:
    stat = _stat(pid)
    return stat is None or stat[0] in _STOPPED_STATES | _DEAD_STATES


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _stat(int(entry))
        if stat is not None and stat[0] not in _DEAD_STATES:
            children.setdefault(stat[1], []).append(int(entry))
    return children


def descendants(pid: int) -> list[int]:
    """Live descendants of ``pid`` (found through the ppid field of /proc/*/stat)."""
    children = _children_map()
    found: list[int] = []
    pending = list(children.get(pid, []))
    while pending:
        child = pending.pop()
        found.append(child)
        pending.extend(children.get(child, []))
    return found


def session_members(sid: int) -> list[int]:
    """Live processes of session ``sid``. Every server here leads a session of its own, so
    this finds its children even after they were reparented."""
    members = []
    for entry in os.listdir("/proc"):
        fields = _stat_fields(int(entry)) if entry.isdigit() else None
        if fields is not None and fields[0] not in _DEAD_STATES and int(fields[3]) == sid:
            members.append(int(entry))
    return members


def _command_line(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return ""
    return raw.replace(b"\x00", b" ").decode(errors="replace")


def pid_runs(pid: int, marker: str) -> bool:
    """Whether ``pid`` is alive and its command line contains ``marker`` (so a pid reused
    by another program since it was recorded does not count)."""
    return pid_alive(pid) and marker in _command_line(pid)


def stop_process(pid: int, marker: str, sig: signal.Signals, timeout: float = STOP_TIMEOUT) -> bool:
    """Stop a server left running by ``detach()``: send ``sig`` (SIGKILL after ``timeout``)
    and wait until it and its session are gone. Only if ``pid`` is alive and its command
    line contains ``marker`` (a reused pid is left alone); whether it was stopped."""
    if not pid_runs(pid, marker):
        return False
    _signal_all([pid], sig)
    try:
        wait_until(lambda: not session_members(pid), timeout, f"server pid {pid} to exit")
    except TimeoutError:
        _signal_all(session_members(pid), signal.SIGKILL)
        wait_until(lambda: not session_members(pid), SETTLE_TIMEOUT, f"pid {pid} to die")
    return True


def _signal_all(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


_PRCTL = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not in the forked child


def _set_parent_death_signal() -> None:  # runs in the forked child, before exec
    _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


def _preexec(persistent: bool = False) -> Callable[[], None] | None:
    # PR_SET_PDEATHSIG fires when the *thread* that forked exits: only safe from main.
    if not persistent and threading.current_thread() is threading.main_thread():
        return _set_parent_death_signal
    return None


@dataclass(frozen=True)
class _Identity:
    """Who a server process runs as (all None: the current user)."""

    uid: int | None = None
    gid: int | None = None
    extra_groups: list[int] | None = None

    def chown(self, path: Path) -> None:
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid)


def _postgres_identity() -> _Identity:
    if os.geteuid() != 0:
        return _Identity()
    try:
        entry = pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        raise RuntimeError(
            f"running as root, but there is no {PG_SYSTEM_USER!r} system user to run "
            "PostgreSQL as (it refuses to run as root)"
        ) from None
    return _Identity(uid=entry.pw_uid, gid=entry.pw_gid, extra_groups=[])


def _may_enter(directory: Path, uid: int, gid: int) -> bool:
    info = directory.stat()
    if info.st_uid == uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid == gid:
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def server_user_can_reach(path: Path) -> bool:
    """Whether PostgreSQL's user may traverse every existing directory down to ``path``
    (always, unless it runs as another user: see ``PostgresServer``'s ``base_dir``)."""
    ident = _postgres_identity()
    if ident.uid is None or ident.gid is None:
        return True
    existing = [p for p in (path.resolve(), *path.resolve().parents) if p.exists()]
    return all(_may_enter(p, ident.uid, ident.gid) for p in existing if p.is_dir())


@dataclass
class _Resources:
    """What the interpreter-exit finalizer must clean up (no reference to the server)."""

    proc: subprocess.Popen[bytes] | None = None
    dirs: list[Path] = field(default_factory=list)


def _reap(resources: _Resources) -> None:
    proc = resources.proc
    if proc is not None and proc.poll() is None:
        pids = [proc.pid, *descendants(proc.pid)]
        _signal_all(pids, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=SETTLE_TIMEOUT)
    for directory in resources.dirs:
        shutil.rmtree(directory, ignore_errors=True)


# ------------------------------------------------------------------ managed process


class _ManagedServer(abc.ABC):
    """A server process owned by its caller: start/stop/kill/pause/resume/restart."""

    name = "server"
    stop_signal = signal.SIGTERM
    start_timeout = REDIS_START_TIMEOUT

    def __init__(
        self, workdir: Path, port: int | None, log_name: str, persistent: bool = False
    ) -> None:
        self.persistent = persistent
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port if port is not None else free_port()
        self.log_path = self.workdir / log_name
        self._resources = _Resources()
        self._paused = False
        self._finalizer = weakref.finalize(self, _reap, self._resources)

    # -- subclass hooks
    @abc.abstractmethod
    def _argv(self) -> list[str]:
        """The server's command line."""

    def _prepare(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Run before every spawn (write config, initdb...)."""

    @abc.abstractmethod
    def _probe(self) -> bool:
        """Whether the server answers."""

    def _identity(self) -> _Identity:
        return _Identity()

    def _cwd(self) -> Path:
        return self.workdir

    # -- state
    @property
    def is_running(self) -> bool:
        proc = self._resources.proc
        return proc is not None and proc.poll() is None

    @property
    def is_paused(self) -> bool:
        return self._paused and self.is_running

    @property
    def pid(self) -> int:
        proc = self._resources.proc
        if proc is None or proc.poll() is not None:
            raise RuntimeError(f"{self.name} on port {self.port} is not running")
        return proc.pid

    def log_tail(self, lines: int = 30) -> str:
        return _tail(self.log_path, lines)

    def detach(self) -> int:
        """Leave the running server up after this process exits (start it ``persistent``,
        or it dies with its starter anyway); its pid, for ``stop_process``."""
        if not self.persistent:
            raise RuntimeError(f"{self.name} was not started persistent: it cannot outlive us")
        pid = self.pid
        self._finalizer.detach()
        return pid

    # -- lifecycle
    def start(self) -> None:
        if self.is_running:
            raise RuntimeError(f"{self.name} on port {self.port} is already running")
        if _port_accepts(self.port):  # else the readiness probe could reach a stranger
            raise RuntimeError(f"cannot start {self.name}: port {self.port} is in use")
        self._prepare()
        self._spawn()
        self._await_ready()

    def stop(self) -> None:
        """Graceful shutdown; waits for the process, its children and the port. Idempotent."""
        proc = self._resources.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(self.stop_signal)
            self.resume()  # a stopped process only acts on the signal once continued
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        self._settle(proc, [])

    def kill(self) -> None:
        """SIGKILL the server and every descendant; wait until all are gone. Idempotent."""
        proc = self._resources.proc
        if proc is None:
            return
        children = self._discard(proc)
        self._settle(proc, children)

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP the server, then its children; returns once all are stopped."""
        root = self.pid
        os.kill(root, signal.SIGSTOP)
        wait_until(lambda: _is_stopped(root), SETTLE_TIMEOUT, f"{self.name} to stop")
        children = descendants(root)  # the stopped root cannot fork any more
        _signal_all(children, signal.SIGSTOP)
        wait_until(
            lambda: all(_is_stopped(pid) for pid in children),
            SETTLE_TIMEOUT,
            f"{self.name} children to stop",
        )
        self._paused = True

    def resume(self) -> None:
        """SIGCONT the children, then the server. A no-op when not paused."""
        proc = self._resources.proc
        if self._paused and proc is not None and proc.poll() is None:
            _signal_all([*descendants(proc.pid), proc.pid], signal.SIGCONT)
        self._paused = False

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals
    def _spawn(self) -> None:
        ident = self._identity()
        with self.log_path.open("ab") as log:
            self._resources.proc = subprocess.Popen(
                self._argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._cwd(),
                start_new_session=True,
                preexec_fn=_preexec(self.persistent),
                user=ident.uid,
                group=ident.gid,
                extra_groups=ident.extra_groups,
            )
        self._paused = False

    def _await_ready(self) -> None:
        proc = self._resources.proc
        assert proc is not None
        deadline = time.monotonic() + self.start_timeout
        while proc.poll() is None:
            if self._probe() and proc.poll() is None:
                return
            if time.monotonic() >= deadline:
                self._discard(proc)
                raise RuntimeError(self._failure(f"not ready after {self.start_timeout:.0f}s"))
            time.sleep(POLL_INTERVAL)
        self._discard(proc)
        raise RuntimeError(self._failure(f"exited with code {proc.returncode} while starting"))

    def _failure(self, what: str) -> str:
        return f"{self.name} on port {self.port} {what}; tail of {self.log_path}:\n" + (
            self.log_tail()
        )

    def _discard(self, proc: subprocess.Popen[bytes]) -> list[int]:
        """SIGKILL the process tree, reap the root, forget it; return the children."""
        children = descendants(proc.pid) if proc.poll() is None else []
        _signal_all([proc.pid, *children], signal.SIGKILL)
        proc.wait(timeout=SETTLE_TIMEOUT)
        self._resources.proc = None
        self._paused = False
        return children

    def _settle(self, proc: subprocess.Popen[bytes], children: list[int]) -> None:
        """After the root exited: wait for its children to die and the port to close."""
        self._resources.proc = None
        self._paused = False
        wait_until(
            lambda: not any(pid_alive(pid) for pid in children),
            SETTLE_TIMEOUT,
            f"children of {self.name} (pid {proc.pid}) to exit",
        )
        wait_until(
            lambda: not _port_accepts(self.port),
            SETTLE_TIMEOUT,
            f"port {self.port} to be free after {self.name} exited",
        )


# ----------------------------------------------------------------------------- redis


def _redis_binary() -> Path:
    configured = os.environ.get("ARCHIVER_TEST_REDIS_SERVER")
    candidate = configured or shutil.which("redis-server") or "/usr/bin/redis-server"
    path = Path(candidate)
    if not (path.is_file() and os.access(path, os.X_OK)):
        source = "$ARCHIVER_TEST_REDIS_SERVER" if configured else "PATH and /usr/bin"
        raise ServerBinaryNotFoundError(
            f"redis-server not found (looked at {path}, from {source}); install Redis "
            "(apt-get install redis-server) or set ARCHIVER_TEST_REDIS_SERVER"
        )
    return path


def redis_stack() -> tuple[Path, list[Path]]:
    """Redis Stack's server and its modules (RedisJSON, RediSearch: the langgraph-redis source
    needs them), from $ARCHIVER_TEST_REDIS_STACK or the checkout's .cache/redis-stack."""
    configured = os.environ.get("ARCHIVER_TEST_REDIS_STACK")
    root = Path(configured) if configured else Path(__file__).resolve().parents[2] / ".cache"
    root = root if configured else root / "redis-stack"
    binary, modules = root / "bin" / "redis-server", [root / "lib" / "rejson.so"]
    modules.append(root / "lib" / "redisearch.so")
    if not all(path.is_file() for path in (binary, *modules)):
        raise ServerBinaryNotFoundError(
            f"Redis Stack (redis-server with RedisJSON and RediSearch) is not in {root}: fetch"
            " it with `python -m ops.redisstack` (`make test-servers` does), set"
            " ARCHIVER_TEST_REDIS_STACK to its folder, or give --redis-url of a Redis Stack"
        )
    return binary, modules


def _redis_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class RedisServer(_ManagedServer):
    """A private redis-server. ``url`` is ``redis://127.0.0.1:{port}/0``."""

    name = "redis-server"
    stop_signal = signal.SIGTERM
    start_timeout = REDIS_START_TIMEOUT

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        extra_config: Sequence[str] = (),
        appendonly: bool = False,
        persistent: bool = False,
        binary: Path | None = None,
        modules: Sequence[Path] = (),
    ) -> None:
        """`binary` and `modules`: another redis-server and the modules it loads (Redis
        Stack's, for the langgraph-redis source); each must exist."""
        self.binary = binary or _redis_binary()
        for path in (self.binary, *modules):
            if not path.is_file():
                raise ServerBinaryNotFoundError(f"{path} not found")
        super().__init__(workdir, port, "redis.log", persistent)
        self.extra_config = [*(f"loadmodule {_redis_quote(str(m))}" for m in modules)]
        self.extra_config += list(extra_config)
        self.appendonly = appendonly
        self.config_path = self.workdir / "redis.conf"

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def config_lines(self) -> list[str]:
        return [
            f"bind {HOST}",
            f"port {self.port}",
            f"dir {_redis_quote(str(self.workdir))}",
            'save ""',
            f"appendonly {'yes' if self.appendonly else 'no'}",
            "appendfsync everysec",
            f"logfile {_redis_quote(str(self.log_path))}",
            "daemonize no",
            *self.extra_config,
        ]

    def _prepare(self) -> None:
        self.config_path.write_text("\n".join(self.config_lines()) + "\n")

    def _argv(self) -> list[str]:
        return [str(self.binary), str(self.config_path)]

    def _probe(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                reply = sock.recv(64)
        except OSError:
            return False
        # -NOAUTH: up, but extra_config set a password. -LOADING: still reading the AOF.
        return reply.startswith((b"+PONG", b"-NOAUTH"))


# ------------------------------------------------------------------------ postgresql


_PG_TOOLS = ("postgres", "initdb", "pg_isready")


def _has_pg_tools(directory: Path) -> bool:
    return all(os.access(directory / tool, os.X_OK) for tool in _PG_TOOLS)


def _pg_config_bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    result = subprocess.run(
        [pg_config, "--bindir"], capture_output=True, text=True, check=False, timeout=10
    )
    return Path(result.stdout.strip()) if result.returncode == 0 else None


def _version_key(path: Path) -> tuple[int, str]:
    version = path.parent.name
    return (int(version) if version.isdigit() else -1, version)


def _pg_bin_candidates() -> list[Path]:
    candidates = [_pg_config_bindir()]
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key)[::-1]
    on_path = shutil.which("postgres")
    candidates.append(Path(on_path).resolve().parent if on_path else None)
    return [path for path in candidates if path is not None]


def _pg_bindir() -> Path:
    configured = os.environ.get("ARCHIVER_TEST_PG_BIN")
    if configured:
        if not _has_pg_tools(Path(configured)):
            raise ServerBinaryNotFoundError(
                f"$ARCHIVER_TEST_PG_BIN={configured} does not hold {', '.join(_PG_TOOLS)}"
            )
        return Path(configured)
    for candidate in _pg_bin_candidates():
        if _has_pg_tools(candidate):
            return candidate
    raise ServerBinaryNotFoundError(
        f"PostgreSQL server binaries ({', '.join(_PG_TOOLS)}) not found via pg_config, "
        "/usr/lib/postgresql/*/bin or PATH; install PostgreSQL "
        "(apt-get install postgresql) or set ARCHIVER_TEST_PG_BIN to its bin directory"
    )


class PostgresServer(_ManagedServer):
    """A private PostgreSQL cluster (superuser ``postgres``, trust auth, no fsync).

    ``stop`` is a fast shutdown (SIGINT); ``kill`` SIGKILLs the postmaster and all its
    children, so the next ``start`` runs crash recovery and keeps every acknowledged
    commit (fsync=off only risks data on an OS crash); ``pause`` stops them all.
    ``settings`` adds or overrides ``-c`` options (e.g. ``{"log_statement": "all"}``).
    The cluster lives in ``base_dir`` (see the module docstring), the logs in workdir.
    A ``base_dir`` given by the caller is created (owned by the server user) and kept.
    """

    name = "postgres"
    stop_signal = signal.SIGINT
    start_timeout = PG_START_TIMEOUT

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        settings: Mapping[str, str] | None = None,
        base_dir: Path | None = None,
        persistent: bool = False,
    ) -> None:
        self.bindir = _pg_bindir()
        self._ident = _postgres_identity()
        super().__init__(workdir, port, "postgres.log", persistent)
        self.settings = dict(settings or {})
        if base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="archiver-pg-"))
            self._resources.dirs.append(self.base_dir)
        else:
            self.base_dir = Path(base_dir).resolve()
            self.base_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._ident.chown(self.base_dir)
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self.initdb_log_path = self.workdir / "initdb.log"

    def dsn(self, dbname: str = "postgres", user: str = PG_SUPERUSER) -> str:
        return f"postgresql://{user}@{HOST}:{self.port}/{dbname}"

    def cleanup(self) -> None:
        """Stop the server and delete its cluster (not a caller's ``base_dir``). The object is
        unusable afterwards."""
        self.stop()
        self._finalizer()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def _identity(self) -> _Identity:
        return self._ident

    def _cwd(self) -> Path:
        return self.base_dir  # the server user may not be able to enter self.workdir

    def _prepare(self) -> None:
        if not self.base_dir.is_dir():
            raise RuntimeError(f"{self.name} on port {self.port} was cleaned up")
        if not self.socket_dir.is_dir():
            self.socket_dir.mkdir(mode=0o700)
            self._ident.chown(self.socket_dir)
        if not (self.data_dir / "PG_VERSION").is_file():
            self._initdb()

    def _initdb(self) -> None:
        argv = [str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", PG_SUPERUSER]
        argv += ["--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"]
        with self.initdb_log_path.open("ab") as log:
            result = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
                user=self._ident.uid,
                group=self._ident.gid,
                extra_groups=self._ident.extra_groups,
                check=False,
                timeout=120,
            )
        if result.returncode != 0:
            raise RuntimeError(
                f"initdb failed with code {result.returncode}; tail of "
                f"{self.initdb_log_path}:\n{_tail(self.initdb_log_path, 30)}"
            )

    def _argv(self) -> list[str]:
        settings = {
            "listen_addresses": HOST,
            "fsync": "off",
            # Not "off": that acknowledges COMMITs still in WAL buffers, which a SIGKILL
            # then loses. With fsync=off, "on" costs a write() and survives kill().
            "synchronous_commit": "on",
            "full_page_writes": "off",
            "max_connections": "200",
            **self.settings,
        }
        argv = [str(self.bindir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)]
        argv += ["-k", str(self.socket_dir)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        return argv

    def _probe(self) -> bool:
        if not _port_accepts(self.port):
            return False
        argv = [str(self.bindir / "pg_isready"), "-q", "-h", HOST, "-p", str(self.port)]
        argv += ["-U", PG_SUPERUSER, "-d", "postgres", "-t", "2"]
        result = subprocess.run(argv, stdin=subprocess.DEVNULL, check=False, timeout=10)
        return result.returncode == 0


# ------------------------------------------------------------------------- databases


def quote_ident(name: str) -> str:
    """Quote an SQL identifier (``a"b`` -> ``"a""b"``)."""
    if not name or "\x00" in name:
        raise ValueError(f"invalid SQL identifier: {name!r}")
    return '"' + name.replace('"', '""') + '"'


async def _execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(sql, timeout=60)
    finally:
        await conn.close()


async def create_database(
    admin_dsn: str, name: str, template: str | None = None, owner: str | None = None
) -> None:
    """CREATE DATABASE ``name`` [TEMPLATE ``template``] [OWNER ``owner``].

    PostgreSQL copies a template only while nobody else is connected to it (it waits up
    to 5 s for other sessions to leave): close every connection to the template first.
    """
    sql = f"CREATE DATABASE {quote_ident(name)}"
    if template is not None:
        sql += f" TEMPLATE {quote_ident(template)}"
    if owner is not None:
        sql += f" OWNER {quote_ident(owner)}"
    await _execute(admin_dsn, sql)


async def create_roles(admin_dsn: str) -> None:
    """The login roles of a least-privilege deployment, if missing: PG_OWNER (may create the
    group roles, owns the schema, not a superuser) and PG_WRITER (granted archiver_writer
    once a migration created it, see ``grant_writer``)."""
    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        logins = ((PG_OWNER, "LOGIN CREATEROLE"), (PG_WRITER, "LOGIN"), (PG_API, "LOGIN"))
        for role, options in logins:
            if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
                with contextlib.suppress(asyncpg.DuplicateObjectError):  # a parallel creator
                    await conn.execute(f"CREATE ROLE {quote_ident(role)} {options}")
    finally:
        await conn.close()


async def create_migrated_database(server: PostgresServer, name: str) -> None:
    """CREATE DATABASE ``name`` on ``server``, owned by PG_OWNER, with every migration applied
    by that owner (a template to clone per test or per scenario); PG_WRITER may archive in
    it (``server.dsn(name, user=PG_WRITER)``)."""
    await create_roles(server.dsn())
    await create_database(server.dsn(), name, owner=PG_OWNER)
    conn = await asyncpg.connect(server.dsn(name, user=PG_OWNER), timeout=10)
    try:
        await migrate.migrate(conn)
    finally:
        await conn.close()
    await _execute(server.dsn(name), f"GRANT archiver_writer TO {quote_ident(PG_WRITER)}")
    await _execute(server.dsn(name), f"GRANT archiver_api TO {quote_ident(PG_API)}")


async def drop_database(admin_dsn: str, name: str) -> None:
    """DROP DATABASE IF EXISTS ``name`` WITH (FORCE): terminates its sessions first."""
    await _execute(admin_dsn, f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")

"""Child processes of the benchmark: `archiver run`/`archiver sweep` and py-spy.

Every child is registered, dies with us (PR_SET_PDEATHSIG) and is killed by `kill_all` at the
latest, so that no archiver outlives a failed or interrupted run.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from consumer.demo import embedded as servers

STOP_TIMEOUT_S = 20.0
SLOW_STOP_S = 3.0
_CHILDREN: list[subprocess.Popen[bytes]] = []
_PR_SET_PDEATHSIG = 1
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent() -> None:  # runs in the forked child
    _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


def spawn(argv: list[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start a registered child in its own session, stdout and stderr to `log`."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv, env=dict(env), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent,
        )  # fmt: skip
    _CHILDREN.append(proc)
    return proc


async def stop(proc: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM) -> int:
    """Signal the child, wait for it (SIGKILL after STOP_TIMEOUT_S); its exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(proc.wait, STOP_TIMEOUT_S)
    if proc.poll() is None:
        proc.kill()
    code = proc.wait()
    if proc in _CHILDREN:
        _CHILDREN.remove(proc)
    return code


def kill_all() -> None:
    """Last resort (interrupts): SIGKILL every child still registered."""
    for proc in list(_CHILDREN):
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        _CHILDREN.remove(proc)


def archiver_env(
    redis_url: str, database_url: str, workdir: Path, **settings: object
) -> dict[str, str]:
    """The environment of an `archiver` child: ARCHIVER_* from keywords, JSON logs."""
    values = {
        "redis_url": redis_url, "database_url": database_url, "log_format": "json",
        "health_file": workdir / "health.json", "http_host": "127.0.0.1", "http_port": 0,
    } | settings  # fmt: skip
    return os.environ | {f"ARCHIVER_{k.upper()}": str(v) for k, v in values.items()}


@dataclass(slots=True)
class Archiver:
    """A running `archiver run` with its log and /metrics port."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    stop_s: float | None = None  # SIGTERM -> exit, once stopped

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"archiver exited with code {self.proc.returncode}; see {self.log}")

    async def get(self, path: str) -> tuple[int, str]:
        timeout = aiohttp.ClientTimeout(total=10)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(f"http://127.0.0.1:{self.port}{path}") as reply,
        ):
            return reply.status, await reply.text()

    async def ready(self, within: float = 120.0) -> None:
        """Wait until /readyz says ready (servers reached, notifications self-tested)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                if (await self.get("/readyz"))[0] == 200:
                    return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"archiver not ready within {within:.0f}s; see {self.log}")

    async def metrics(self) -> dict[str, float]:
        return parse_metrics((await self.get("/metrics"))[1])

    def status(self) -> dict[str, int]:
        """VmRSS and VmHWM (peak RSS) of the process, in kB."""
        found: dict[str, int] = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                found[name] = int(value.split()[0])
        return found


@contextlib.asynccontextmanager
async def archiver_run(env: Mapping[str, str], log: Path) -> AsyncIterator[Archiver]:
    """`archiver run` in a child process, ready; SIGTERM (then SIGKILL) on leaving."""
    port = servers.free_port()
    env = dict(env) | {"ARCHIVER_HTTP_PORT": str(port)}
    proc = spawn([sys.executable, "-m", "consumer", "run"], env, log)
    archiver = Archiver(proc, port, log)
    try:
        await archiver.ready()
        yield archiver
    finally:
        started = time.monotonic()
        await _stop_archiver(proc, log)
        archiver.stop_s = round(time.monotonic() - started, 2)


async def _stop_archiver(proc: subprocess.Popen[bytes], log: Path) -> None:
    """SIGTERM; if it is still running after SLOW_STOP_S, keep a py-spy dump of its stacks
    (when py-spy is installed) beside its log: what it waits on while shutting down."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        await asyncio.to_thread(proc.wait, SLOW_STOP_S)
    if proc.poll() is None:
        with contextlib.suppress(RuntimeError, OSError, subprocess.SubprocessError):
            dump = [py_spy(), "dump", "--pid", str(proc.pid)]
            found = await asyncio.to_thread(subprocess.run, dump, capture_output=True, timeout=30)
            log.with_suffix(".stop-dump.txt").write_bytes(found.stdout + found.stderr)
    await stop(proc)


async def run_to_end(argv: list[str], env: Mapping[str, str], log: Path, within: float) -> int:
    """Run a child to its end (killed after `within` s or on cancellation); its exit code."""
    proc = spawn(argv, env, log)
    try:
        return await asyncio.to_thread(proc.wait, within)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"{argv[-1]} still running after {within:.0f}s; see {log}") from None
    finally:
        await stop(proc, signal.SIGKILL)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?)\s+(\S+)")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format: `name{labels}` -> value."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and not line.startswith("#"):
            found[match.group(1)] = float(match.group(2))
    return found


def py_spy() -> str:
    """The py-spy binary (PATH, else beside this Python); RuntimeError if missing."""
    found = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if found is None:
        raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
    return found


@contextlib.asynccontextmanager
async def profiled(pid: int, out: Path | None) -> AsyncIterator[None]:
    """py-spy record (collapsed stacks) of `pid` while inside, if `out` is given."""
    if out is None:
        yield
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [py_spy(), "record", "--pid", str(pid), "--rate", "200", "--format", "raw"]
    proc = spawn([*argv, "-o", str(out)], os.environ, out.with_suffix(".log"))
    try:
        yield
    finally:
        await stop(proc, signal.SIGINT)

"""`archiver` processes started by a scenario: run, kill -9, restart, supervise, read logs."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

ROOT = Path(__file__).resolve().parents[2]
STOP_TIMEOUT_S = 20.0
_PR_SET_PDEATHSIG = 1
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent() -> None:  # runs in the forked child
    _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


def _preexec() -> Callable[[], None] | None:
    if threading.current_thread() is threading.main_thread():
        return _die_with_parent
    return None


F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Linux), named in Python only from 3.10 on some builds
PIPE_BYTES = 4096  # the smallest pipe Linux allows: a stalled reader blocks the writer at once


class Relay:
    """A reader of a process's stderr pipe that copies it to the process's log file, and that
    can stop reading (`pause`), as a stuck log shipper or a paused pager does: the pipe
    (shrunk to one page) fills and every further write of the process to it blocks."""

    def __init__(self, pipe: IO[bytes], log_path: Path) -> None:
        self.fd = pipe.fileno()
        with contextlib.suppress(OSError):
            fcntl.fcntl(self.fd, F_SETPIPE_SZ, PIPE_BYTES)
        self.pipe = pipe
        self.log_path = log_path
        self.flowing = threading.Event()
        self.flowing.set()
        self.thread = threading.Thread(target=self._copy, name="relay", daemon=True)
        self.thread.start()

    def pause(self) -> None:
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    def _copy(self) -> None:
        with self.log_path.open("ab", buffering=0) as log:
            while True:
                self.flowing.wait()
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    break
                log.write(chunk)
        self.pipe.close()


@dataclass(slots=True)
class Proc:
    """One `archiver` process; `killed` when we SIGKILLed it on purpose."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    started: float = field(default_factory=time.monotonic)
    killed: bool = False
    relay: Relay | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def rss_kb(self) -> int:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return 0
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def started_consumer(self) -> bool:
        try:
            return b'"consumer.started"' in self.log_path.read_bytes()
        except OSError:
            return False


class Fleet:
    """The archiver processes of one scenario, each logging JSON lines to a file of its own."""

    def __init__(
        self,
        workdir: Path,
        env: Callable[[str], dict[str, str]],
        relayed: Callable[[str], bool] = lambda name: False,
    ) -> None:
        self.workdir = workdir
        self.env = env
        self.relayed = relayed  # processes whose stderr goes through a Relay
        self.procs: list[Proc] = []
        self.crashes: list[dict[str, Any]] = []
        self.kills = 0
        self.peak_rss_kb = 0
        self._count = 0

    def start(self, name: str, *args: str) -> Proc:
        self._count += 1
        log_path = self.workdir / f"{name}-{self._count:03d}.log"
        relayed = self.relayed(name)
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                [sys.executable, "-m", "consumer", *(args or ("run",))],
                env=os.environ | self.env(name),
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.PIPE if relayed else subprocess.STDOUT,
                preexec_fn=_preexec(),
            )
        relay = Relay(popen.stderr, log_path) if popen.stderr is not None else None
        proc = Proc(name, popen, log_path, relay=relay)
        self.procs.append(proc)
        return proc

    def relays(self) -> list[Relay]:
        return [p.relay for p in self.procs if p.relay is not None]

    def running(self, name: str) -> Proc | None:
        for proc in reversed(self.procs):
            if proc.name == name and proc.alive:
                return proc
        return None

    def kill(self, proc: Proc) -> None:
        """SIGKILL, on purpose (not a crash)."""
        proc.killed = True
        if proc.alive:
            proc.popen.kill()
            self.kills += 1
        proc.popen.wait(timeout=STOP_TIMEOUT_S)

    async def ready(self, proc: Proc, patience: float = 30.0) -> None:
        deadline = time.monotonic() + patience
        while not proc.started_consumer():
            if not proc.alive or time.monotonic() > deadline:
                raise RuntimeError(f"{proc.name} did not start; see {proc.log_path}")
            await asyncio.sleep(0.05)

    def sample_rss(self) -> None:
        for proc in self.procs:
            if proc.alive:
                self.peak_rss_kb = max(self.peak_rss_kb, proc.rss_kb())

    async def supervise(self, names: list[str], every: float = 0.2) -> None:
        """Restart a consumer that exited on its own (as systemd/Kubernetes would), noting it
        as a crash; sample memory meanwhile."""
        while True:
            for name in names:
                self._restart_if_crashed(name)
            self.sample_rss()
            await asyncio.sleep(every)

    def _restart_if_crashed(self, name: str) -> None:
        mine = [p for p in self.procs if p.name == name]
        if not mine or mine[-1].alive or mine[-1].killed:
            return
        last = mine[-1]
        self.crashes.append(
            {"process": name, "code": last.popen.returncode, "log": str(last.log_path)}
        )
        self.start(name)

    def stop_all(self) -> None:
        """SIGTERM every live process, then SIGKILL what is left; reap all; drain relays."""
        for relay in self.relays():
            relay.resume()
        live = [p for p in self.procs if p.alive]
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                proc.popen.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in live:
            try:
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(timeout=STOP_TIMEOUT_S)
        for proc in self.procs:
            if proc.popen.returncode is None:
                proc.popen.wait(timeout=STOP_TIMEOUT_S)
        for relay in self.relays():
            relay.thread.join(timeout=STOP_TIMEOUT_S)

    def events(self) -> Iterator[dict[str, Any]]:
        """Every JSON log line of every process (a SIGKILL may cut the last line short)."""
        for path in sorted(self.workdir.glob("*.log")):
            with path.open("rb") as lines:
                for line in lines:
                    if line.startswith(b"{"):
                        with contextlib.suppress(orjson.JSONDecodeError):
                            yield orjson.loads(line)

"""Health: the live state of a process, its atomically written health file, and the verdict."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
import structlog

from consumer import times

Status = Literal["healthy", "degraded", "unhealthy"]
Mode = Literal["starting", "events", "degraded", "sweep-only"]

log = structlog.get_logger("consumer.health")


@dataclass(frozen=True, slots=True)
class JobHealth:
    """A periodic job as the shared job_runs table shows it (whichever replica ran it)."""

    status: str | None  # of its latest finished run: ok | failed | interrupted (None: never)
    finished_at: float | None = None
    error: str | None = None
    running: bool = False
    next_run_at: float | None = None
    last_success_at: float | None = None

    @property
    def failed(self) -> bool:
        return self.status in ("failed", "interrupted")

    def snapshot(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "finished_at": _iso(self.finished_at),
            "error": self.error,
            "running": self.running,
            "next_run_at": _iso(self.next_run_at),
            "last_success_at": _iso(self.last_success_at),
        }


@dataclass(slots=True)
class State:
    """What the running process knows about itself; read by /healthz, /readyz and the file."""

    sweep_interval: float
    mode: Mode = "starting"
    started_at: float = field(default_factory=time.time)
    subscribed: bool = False
    database_ok: bool = False
    redis_ok: bool = False
    last_sweep_ok_at: float | None = None
    last_sweep_at: float | None = None
    checkpoints_archived: int = 0
    messages_archived: int = 0
    dead_letters: int = 0
    errors: int = 0
    recent_errors: int = 0
    jobs: dict[str, JobHealth] = field(default_factory=dict)

    def failed_jobs(self) -> list[str]:
        """Jobs whose latest run failed: they run again at their next schedule."""
        return sorted(name for name, job in self.jobs.items() if job.failed)

    def sweep_stale(self, now: float | None = None) -> bool:
        """No successful sweep for 1.5 x the interval (counted from start before the first)."""
        now = now if now is not None else time.time()
        since = self.last_sweep_ok_at or self.started_at
        return now - since > 1.5 * self.sweep_interval

    def liveness_problems(self) -> list[str]:
        """What a restart could fix: /healthz. A database outage is not one of them (a restarted
        archiver would hold nothing alive while it waits), so it only shows in problems()."""
        found = []
        if self.sweep_stale():
            found.append("no successful sweep for 1.5 x ARCHIVER_SWEEP_INTERVAL")
        if self.mode == "events" and not self.subscribed:
            found.append("keyevent subscription is down")
        return found

    def problems(self) -> list[str]:
        found = self.liveness_problems()
        if not self.database_ok:
            found.append("PostgreSQL unreachable")
        if not self.redis_ok:
            found.append("Redis unreachable")
        return found

    def status(self) -> Status:
        if self.problems():
            return "unhealthy"
        if self.mode in ("degraded", "starting") or self.recent_errors or self.failed_jobs():
            return "degraded"
        return "healthy"

    def snapshot(self) -> dict[str, Any]:
        return {
            "last_run": _iso(time.time()),
            "status": self.status(),
            "mode": self.mode,
            "problems": self.problems(),
            "pid": os.getpid(),
            "started_at": _iso(self.started_at),
            "last_sweep_at": _iso(self.last_sweep_at),
            "last_successful_sweep_at": _iso(self.last_sweep_ok_at),
            "subscribed": self.subscribed,
            "checkpoints_archived": self.checkpoints_archived,
            "messages_archived": self.messages_archived,
            "dead_letters": self.dead_letters,
            "errors": self.errors,
            "sweep_interval_s": self.sweep_interval,
            "failed_jobs": self.failed_jobs(),
            "jobs": {name: job.snapshot() for name, job in sorted(self.jobs.items())},
        }


def _iso(ts: float | None) -> str | None:
    return None if ts is None else times.iso(datetime.fromtimestamp(ts, UTC))


def write(path: Path, snapshot: dict[str, Any]) -> None:
    """Replace the health file atomically: readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(orjson.dumps(snapshot, option=orjson.OPT_INDENT_2))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_safely(path: Path, snapshot: dict[str, Any]) -> bool:
    """`write`, logging a failure instead of raising it: the work it reports on is done."""
    try:
        write(path, snapshot)
    except OSError as exc:
        log.warning("health.not_written", path=str(path), error=str(exc))
        return False
    return True


def read(path: Path) -> dict[str, Any] | None:
    """The health file's content, or None if it is missing or not a JSON object."""
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def age(snapshot: dict[str, Any] | None) -> float | None:
    """Seconds since the file was written (by a process of this host: same clock)."""
    try:
        return time.time() - datetime.fromisoformat(snapshot["last_run"]).timestamp()  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        return None


def verdict(snapshot: dict[str, Any] | None, max_age: float) -> tuple[bool, str]:
    """For `archiver check` (and `status`): healthy enough (exit 0) and why."""
    if snapshot is None:
        return False, "no health file"
    age_s = age(snapshot)
    if age_s is None:
        return False, "health file has no valid last_run"
    if age_s > max_age:
        return False, f"health file is {age_s:.0f}s old (limit {max_age:.0f}s)"
    if snapshot.get("status") == "unhealthy":
        return False, "unhealthy: " + "; ".join(snapshot.get("problems") or [])
    return True, f"{snapshot.get('status')} ({snapshot.get('mode')})"

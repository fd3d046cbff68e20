"""What state the archiver is in, seen from wherever the command runs.

Three sources, each read on its own so that one being down does not hide the others:

* the local health file (`ARCHIVER_HEALTH_FILE`): its age and `archiver check`'s verdict;
* the consumers' heartbeats in Redis (`heartbeat`): every running `archiver run`, from anywhere;
* the database: reachable, its schema (applied and pending migrations), open dead letters and
  the last `archive_runs` rows.

`archiver status` shows all three; `archiver health` turns the last two into pass/fail checks
(like procrastinate's `healthchecks`), for monitors that run anywhere.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg
from rich.console import Console
from rich.text import Text

from consumer import (
    connection,
    health,
    heartbeat,
    keys,
    migrate,
    service,
    store,
    terminal,
    times,
    urls,
)
from consumer.cli import exits
from consumer.settings import Settings

FILE_EVERY_S = service.HEALTH_EVERY_S
PROBE_TIMEOUT_S = 5.0


def max_age(snapshot: dict[str, Any] | None) -> float:
    """How old a health file may be: `run` rewrites it every few seconds, `sweep` once a run."""
    if snapshot and snapshot.get("mode") == "sweep-only":
        return 1.5 * float(snapshot.get("sweep_interval_s") or 3600)
    return 3 * FILE_EVERY_S + 5


# --- gathering -----------------------------------------------------------------------------------


def health_file(s: Settings) -> dict[str, Any]:
    snapshot = health.read(s.health_file)
    ok, reason = health.verdict(snapshot, max_age(snapshot))
    age = health.age(snapshot)
    return {
        "path": str(s.health_file),
        "age_s": None if age is None else round(age, 3),
        "check": {"ok": ok, "reason": reason},
        "content": snapshot,
    }


async def _part(work: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """A part of the report, or why it could not be read (and the exit code that means)."""
    try:
        return {"ok": True, "error": None} | await work()
    except Exception as exc:
        failure = exits.failure_of(exc)
        if failure is None:
            raise
        return {"ok": False, "error": failure.message, "exit_code": int(failure.code)}


async def consumers(s: Settings) -> dict[str, Any]:
    """The live consumers' heartbeats."""

    async def work() -> dict[str, Any]:
        client = connection.from_url(
            s.redis_url, socket_timeout=PROBE_TIMEOUT_S, socket_connect_timeout=PROBE_TIMEOUT_S
        )
        try:
            with exits.reaching_redis(s.redis_url):
                beats = await heartbeat.read(
                    client, keys.layout_from(s.key_pattern, s.shadow_prefix)
                )
        finally:
            await client.aclose()
        return {"items": [b.as_dict() for b in beats]}

    return await _part(work)


async def database(s: Settings, runs: int) -> dict[str, Any]:
    """Schema state, open dead letters and the last `runs` archive runs."""

    async def work() -> dict[str, Any]:
        timeout = min(s.db_timeout, PROBE_TIMEOUT_S)
        with exits.reaching_postgres(s.database_url):
            pool = await store.connect(s.database_url, command_timeout=timeout, max_size=1)
            try:
                return await _database_facts(pool, runs)
            finally:
                await pool.close()

    return {"url": urls.redact(s.database_url)} | await _part(work)


async def _database_facts(pool: asyncpg.Pool, runs: int) -> dict[str, Any]:
    async with pool.acquire() as conn:
        plan = await migrate.plan(conn)
    facts: dict[str, Any] = {
        "applied_migrations": [_name(m) for m in plan.applied],
        "pending_migrations": [_name(m) for m in plan.pending],
    }
    if plan.pending:
        return facts | {"open_dead_letters": None, "runs": []}
    the_store = store.Store(pool)
    return facts | {
        "open_dead_letters": await the_store.open_dead_letters(),
        "runs": await the_store.recent_runs(runs) if runs else [],
    }


def _name(m: Any) -> str:
    return f"{m.version:04d}_{m.name}"


async def gather(s: Settings, runs: int) -> dict[str, Any]:
    """`archiver status --json`."""
    return {
        "health_file": health_file(s),
        "consumers": await consumers(s),
        "database": await database(s, runs),
    }


def exit_code(report: dict[str, Any]) -> exits.ExitCode:
    """The most serious failure among the parts that could not be read (3, then 2, then 1)."""
    codes = [int(part.get("exit_code", 0)) for part in report.values() if isinstance(part, dict)]
    return exits.ExitCode(max([0, *codes]))


# --- `archiver health` ---------------------------------------------------------------------------


def _check(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "ok": ok, "detail": detail}


def database_check(db: dict[str, Any]) -> dict[str, Any]:
    if not db["ok"]:
        return _check("postgresql", False, db["error"])
    if db["pending_migrations"]:
        pending = ", ".join(db["pending_migrations"])
        detail = f"pending migrations {pending}: run `archiver migrate`"
        return _check("postgresql", False, detail)
    applied = db["applied_migrations"][-1] if db["applied_migrations"] else "none"
    return _check("postgresql", True, f"reachable, schema current ({applied})")


def consumers_check(part: dict[str, Any], minimum: int) -> list[dict[str, Any]]:
    if not part["ok"]:
        return [_check("redis", False, part["error"]),
                _check("consumers", minimum == 0, "unknown: Redis could not be read")]  # fmt: skip
    items = part["items"]
    healthy = [b for b in items if b.get("status") != "unhealthy"]
    return [_check("redis", True, "reachable, heartbeats readable"),
            _check("consumers", len(healthy) >= minimum, _consumers_detail(items, minimum))]  # fmt: skip


def _consumers_detail(items: list[dict[str, Any]], minimum: int) -> str:
    if not items:
        return (
            f"none alive (at least {minimum} expected): start `archiver run`; a running one"
            f" renews its heartbeat every {FILE_EVERY_S:.0f}s"
        )
    shown = "; ".join(
        f"{b['consumer']} {b.get('status')} ({b.get('mode')}, seen {times.age(b['age_s'])} ago)"
        + (f": {', '.join(b['problems'])}" if b.get("problems") else "")
        for b in items
    )
    return f"{len(items)} alive (at least {minimum} healthy expected): {shown}"


async def checks(s: Settings, minimum: int) -> tuple[dict[str, Any], exits.ExitCode]:
    """`archiver health --json`: every check and whether all pass; the exit code (3 or 2 if a
    server could not be read, else 1 if a check fails)."""
    db = await database(s, runs=0)
    part = await consumers(s)
    found = [database_check(db), *consumers_check(part, minimum)]
    ok = all(c["ok"] for c in found)
    result = {"ok": ok, "checks": found, "consumers": part.get("items", [])}
    unread = exit_code({"database": db, "consumers": part})
    return result, unread or (exits.ExitCode.OK if ok else exits.ExitCode.FAILED)


# --- rendering -----------------------------------------------------------------------------------


def _seconds(run: Mapping[str, Any]) -> str:
    return f"{(run['finished_at'] - run['started_at']).total_seconds():.1f}"


RUN_COLUMNS = [
    terminal.column("id", "id", "number", drop=5),
    terminal.column("kind", "kind", "id"),
    terminal.column("host", "host", "id", drop=1),
    terminal.column("started", "started_at", "time"),
    terminal.Column("seconds", _seconds, "number", drop=3),
    terminal.column("status", "status", "id"),
    terminal.column("found", "found", "number", drop=4),
    terminal.column("archived", "archived", "number"),
    terminal.column("messages", "messages", "number", drop=2),
    terminal.column("dead", "dead_letters", "number"),
    terminal.column("errors", "errors", "number"),
]
CONSUMER_COLUMNS = [
    terminal.column("consumer", "consumer", "id"),
    terminal.column("status", "status", "id"),
    terminal.column("mode", "mode", "id"),
    terminal.Column("seen", lambda b: f"{times.age(b['age_s'])} ago", "number"),
    terminal.column("started", "started_at", "id", drop=1),
    terminal.Column("problems", lambda b: "; ".join(b.get("problems") or []), "prose"),
]
CHECK_COLUMNS = [
    terminal.Column("result", lambda c: "ok" if c["ok"] else "FAIL", "id"),
    terminal.column("check", "name", "id"),
    terminal.column("detail", "detail", "prose"),
]


def _heading(out: Console, title: str) -> None:
    terminal.print_line(out, "")
    terminal.print_line(out, Text(title, style="bold underline"))


def _file_fields(part: dict[str, Any]) -> list[tuple[str, Text]]:
    age = "" if part["age_s"] is None else f", written {times.age(part['age_s'])} ago"
    verdict = ("ok: " if part["check"]["ok"] else "FAIL: ") + part["check"]["reason"]
    found = [("health file", terminal.visible(part["path"] + age)),
             ("check", terminal.visible(verdict))]  # fmt: skip
    content = part["content"] or {}
    for name in ("status", "mode", "pid", "started_at", "last_successful_sweep_at",
                 "checkpoints_archived", "messages_archived", "dead_letters", "errors"):  # fmt: skip
        if name in content:
            found.append((name.replace("_", " "), terminal.cell(content[name])))
    if content:
        found.append(
            ("problems", terminal.visible("; ".join(content.get("problems") or []) or "none"))
        )
    if content.get("failed_jobs"):
        found.append(("failed jobs", terminal.visible(", ".join(content["failed_jobs"]))))
    return found


def _database_fields(db: dict[str, Any]) -> list[tuple[str, Text]]:
    found = [("database", terminal.visible(db["url"]))]
    if not db["ok"]:
        return [*found, ("error", terminal.visible(db["error"]))]
    pending = db["pending_migrations"]
    schema = f"pending migrations: {', '.join(pending)}" if pending else "current"
    found.append(("schema", terminal.visible(schema)))
    if db["open_dead_letters"] is not None:
        found.append(("open dead letters", Text(str(db["open_dead_letters"]))))
    return found


PROSE = {"check", "problems", "error", "schema"}


def render(report: dict[str, Any], out: Console) -> None:
    terminal.fields(out, _file_fields(report["health_file"]), PROSE)
    _heading(out, "consumers (heartbeats in Redis)")
    part = report["consumers"]
    if not part["ok"]:
        terminal.sentence(out, Text("FAIL: ") + terminal.visible(part["error"]))
    elif part["items"]:
        terminal.listing(out, CONSUMER_COLUMNS, part["items"])
    else:
        terminal.print_line(out, "none alive")
    _heading(out, "database")
    terminal.fields(out, _database_fields(report["database"]), PROSE)
    if report["database"].get("runs"):
        _heading(out, "last runs")
        terminal.listing(out, RUN_COLUMNS, report["database"]["runs"])


def render_checks(result: dict[str, Any], out: Console) -> None:
    terminal.listing(out, CHECK_COLUMNS, result["checks"])

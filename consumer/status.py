"""`archiver status`: the health file and the last runs, as a table or JSON."""

from __future__ import annotations

from typing import Any

import asyncpg
from rich.console import Console
from rich.table import Table

from consumer import health, service, store
from consumer.settings import Settings

FILE_EVERY_S = service.HEALTH_EVERY_S


def max_age(snapshot: dict[str, Any] | None) -> float:
    """How old a health file may be: `run` rewrites it every few seconds, `sweep` once a run."""
    if snapshot and snapshot.get("mode") == "sweep-only":
        return 1.5 * float(snapshot.get("sweep_interval_s") or 3600)
    return 3 * FILE_EVERY_S + 5


async def gather(s: Settings, limit: int) -> dict[str, Any]:
    snapshot = health.read(s.health_file)
    report: dict[str, Any] = {"health_file": str(s.health_file), "health": snapshot}
    try:
        pool = await store.connect(
            s.database_url, command_timeout=min(s.db_timeout, 10), max_size=1
        )
    except (OSError, asyncpg.PostgresError) as exc:
        report["database_error"] = f"{type(exc).__name__}: {exc}"
        return report
    try:
        the_store = store.Store(pool)
        report["runs"] = await the_store.recent_runs(limit)
        report["open_dead_letters"] = await the_store.open_dead_letters()
    except asyncpg.PostgresError as exc:
        report["database_error"] = f"{type(exc).__name__}: {exc}"
    finally:
        await pool.close()
    return report


def render(report: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    snapshot = report.get("health")
    if snapshot is None:
        console.print(f"[yellow]no health file at {report['health_file']}[/]")
    else:
        table = Table(title="health", show_header=False)
        for name in ("status", "mode", "last_run", "last_successful_sweep_at", "checkpoints_archived",
                     "messages_archived", "dead_letters", "errors", "problems", "failed_jobs"):  # fmt: skip
            table.add_row(name, str(snapshot.get(name)))
        console.print(table)
    if "database_error" in report:
        console.print(f"[red]database: {report['database_error']}[/]")
        return
    console.print(f"open dead letters: {report.get('open_dead_letters', 0)}")
    runs = Table(title="last runs")
    for col in ("id", "kind", "host", "started", "seconds", "status", "found", "archived",
                "messages", "dead", "errors"):  # fmt: skip
        runs.add_column(col)
    for r in report.get("runs", []):
        seconds = (r["finished_at"] - r["started_at"]).total_seconds()
        runs.add_row(
            str(r["id"]), r["kind"], r["host"], r["started_at"].isoformat(timespec="seconds"),
            f"{seconds:.1f}", r["status"], str(r["found"]), str(r["archived"]), str(r["messages"]),
            str(r["dead_letters"]), str(r["errors"]),
        )  # fmt: skip
    console.print(runs)

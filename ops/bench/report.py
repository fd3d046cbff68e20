"""Targets, the JSON document and the readable table."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table


@dataclass(frozen=True, slots=True)
class Target:
    path: str
    op: str
    limit: float | bool

    @property
    def scenario(self) -> str:
        return self.path.split(".", 1)[0]


TARGETS = (
    Target("throughput.ratio_vs_floor", ">=", 0.6),
    Target("naive.ratio_vs_naive", ">=", 10),
    Target("latency.archive_ms.p99", "<=", 250),
    Target("latency.due_to_archived_ms.p99", "<=", 5000),
    Target("sweep.sweep_s", "<=", 20),
    Target("sweep.redis_ping_p99_ms", "<=", 5),
    Target("memory.peak_rss_mb", "<=", 200),
    Target("memory.all_archived_before_ttl", "==", True),
    Target("retention.archive_ms.during_retention.p99", "<=", 250),
    Target("cold.ratio_vs_floor", ">=", 0.7),
    Target("cold.compression_vs_table", ">=", 8),
    Target("cold.peak_rss_mb", "<=", 300),
    Target("api.latency_ms.all.p99", "<=", 50),
    # "the API adds at most 2x the floor's p50": p50 at most 3x the floor's
    Target("api.ratio_p50_vs_floor", "<=", 3),
)
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
}
# What the table shows besides the targets: (path, label).
SHOWN = (
    ("throughput.ckpt_per_s", "archiver checkpoints/s"),
    ("throughput.msgs_per_s", "archiver messages/s"),
    ("throughput.floor_rows_per_s", "floor rows/s (COPY + INSERT ON CONFLICT)"),
    ("throughput.ratio_vs_floor", "messages/s ÷ floor rows/s"),
    ("langgraph.documents_per_s", "langgraph-redis: checkpoint documents/s"),
    ("langgraph.msgs_per_s", "langgraph-redis: messages/s (rows)"),
    ("langgraph.floor_rows_per_s", "langgraph-redis: floor rows/s, same messages"),
    ("langgraph.ratio_vs_floor", "langgraph-redis: messages/s ÷ floor rows/s"),
    ("naive.ckpt_per_s", "naive checkpoints/s (seed design)"),
    ("naive.ratio_vs_naive", "archiver ÷ naive checkpoints/s"),
    ("naive.floor_vs_naive", "floor ÷ naive (the most any archiver gets here)"),
    ("latency.due_to_archived_ms.p50", "due → archived_at p50 (ms)"),
    ("latency.due_to_archived_ms.p99", "due → archived_at p99 (ms)"),
    ("latency.due_to_archived_ms.max", "due → archived_at max (ms)"),
    ("latency.due_to_deleted_ms.p99", "due → DEL seen p99 (ms, commit upper bound)"),
    ("latency.archive_ms.p50", "archive_ms p50 (trigger → commit + delete)"),
    ("latency.archive_ms.p99", "archive_ms p99"),
    ("latency.archive_ms.max", "archive_ms max"),
    ("sweep.sweep_s", "sweep duration (s)"),
    ("sweep.redis_ping_p99_ms", "Redis PING p99 during the sweep (ms)"),
    ("memory.peak_rss_mb", "consumer peak RSS (MB, VmHWM)"),
    ("memory.all_archived_before_ttl", "all archived before their TTL"),
    ("memory.missing", "checkpoints expired unarchived"),
    ("retention.rows", "retention: rows of history (12 months, 5 tenants)"),
    ("retention.rows_dropped", "rows removed by dropping whole partitions"),
    ("retention.drop_rows_per_s", "partition drops: rows/s"),
    ("retention.rows_deleted", "rows deleted in batches per tenant"),
    ("retention.delete_rows_per_s", "batched deletes: rows/s"),
    ("retention.reference_delete.rows_per_s", "reference: one bare DELETE, rows/s"),
    ("retention.apply_s", "retention apply: seconds in all"),
    ("retention.archive_ms.baseline.p99", "archive_ms p99, nothing else running"),
    ("retention.archive_ms.during_reference_delete.p99", "archive_ms p99 during the bare DELETE"),
    ("retention.archive_ms.during_retention.p99", "archive_ms p99 during retention"),
    ("cold.format", "cold: the files' format (--cold-format)"),
    ("cold.rows", "cold: rows of the month exported"),
    ("cold.floor_rows_per_s", "floor: bare COPY → CSV → pyarrow → one file, rows/s"),
    ("cold.export_rows_per_s", "cold export rows/s (streamed, hashed, staged, recorded)"),
    ("cold.ratio_vs_floor", "cold export ÷ floor"),
    ("cold.compression_vs_table", "PostgreSQL size (with indexes) ÷ file bytes"),
    ("cold.compression_vs_heap", "PostgreSQL heap + TOAST ÷ file bytes"),
    ("cold.peak_rss_mb", "cold export peak RSS (MB, its own process)"),
    ("cold.verify_rows_per_s", "cold verify rows/s (read back, hashed, digested)"),
    ("cold.restore_rows_per_s", "cold restore rows/s"),
    ("api.rows", "api: messages of history (3 tenants, 100 per conversation)"),
    ("api.achieved_rps", "api: requests/s sent (open loop)"),
    ("api.latency_ms.conversation_page.p50", "conversation page p50 (ms)"),
    ("api.latency_ms.conversation_page.p99", "conversation page p99 (ms)"),
    ("api.latency_ms.customer_page.p50", "customer page p50 (ms)"),
    ("api.latency_ms.customer_page.p99", "customer page p99 (ms)"),
    ("api.latency_ms.profile.p50", "profile p50 (ms)"),
    ("api.latency_ms.profile.p99", "profile p99 (ms)"),
    ("api.latency_ms.all.p99", "all requests p99 (ms)"),
    ("api.floor_ms.all.p50", "floor: same transactions, bare asyncpg, p50 (ms)"),
    ("api.ratio_p50_vs_floor", "API p50 ÷ floor p50"),
    ("api.capacity_rps", "requests/s with 8 clients (closed loop)"),
    ("api.errors", "non-200 answers"),
    ("erasure.rows", "erasure: rows of history (3 months, 5 tenants)"),
    ("erasure.live_checkpoints", "live checkpoints in Redis"),
    ("erasure.victim_rows", "the erased customer's rows"),
    ("erasure.erase_s", "archiver erase of one customer: seconds in all"),
    ("erasure.steps_s.redis", "start, tombstone and Redis step (SCAN, read all): s"),
    ("erasure.steps_s.postgres", "its PostgreSQL step: seconds"),
    ("erasure.erase_peak_rss_mb", "archiver erase: peak RSS, MB"),
    ("erasure.archiver_peak_rss_mb", "archiver run meanwhile: peak RSS, MB"),
    ("erasure.archive_ms.baseline.p99", "archive_ms p99, nothing else running"),
    ("erasure.archive_ms.during_erasure.p99", "archive_ms p99 during the erasure"),
)


def lookup(results: dict[str, Any], path: str) -> Any:
    node: Any = results
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def judge(results: dict[str, Any], ran: tuple[str, ...]) -> list[dict[str, Any]]:
    """Each target with its value and pass (None when its scenario was not run)."""
    judged = []
    for t in TARGETS:
        value = lookup(results, t.path)
        passed: bool | None = None
        if t.scenario in ran:
            passed = value is not None and bool(_OPS[t.op](value, t.limit))
        judged.append(
            {"name": t.path, "value": value, "op": t.op, "limit": t.limit, "pass": passed}
        )
    return judged


def write_json(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))


def _shown(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _verdict(target: dict[str, Any] | None) -> str:
    if target is None:
        return ""
    if target["pass"] is None:
        return "[dim]not run[/dim]"
    limit = _shown(target["limit"])
    return (
        f"[green]pass[/green] ({target['op']} {limit})"
        if target["pass"]
        else (f"[bold red]FAIL[/bold red] ({target['op']} {limit})")
    )


def table(results: dict[str, Any]) -> Table:
    targets = {t["name"]: t for t in results.get("targets", [])}
    out = Table(title="conversation-archiver benchmark", show_lines=False)
    for column in ("scenario", "metric", "value", "target"):
        out.add_column(column, justify="right" if column == "value" else "left")
    for path, label in SHOWN:
        scenario = path.split(".", 1)[0]
        if scenario not in results:
            continue
        out.add_row(scenario, label, _shown(lookup(results, path)), _verdict(targets.get(path)))
    for scenario, result in results.items():
        if isinstance(result, dict) and "error" in result:
            out.add_row(scenario, "[red]error[/red]", "", str(result["error"])[:80])
    return out


def render(results: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    console.print(table(results))
    meta = results.get("meta", {})
    console.print(
        f"total {meta.get('total_s', 0):.0f}s; {meta.get('targets_passed')} of"
        f" {meta.get('targets_judged')} targets met"
        + ("; QUICK sizes: the targets are meant for the full sizes" if meta.get("quick") else "")
        + ("; INTERRUPTED" if meta.get("interrupted") else "")
    )

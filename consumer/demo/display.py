"""What `archiver demo` shows: a live view (or plain progress lines off a terminal) and the
final report, with a conversation read back from PostgreSQL.

The report shows message content: that is the demo's output, never a log line.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Self

from prometheus_client import Histogram
from rich import box
from rich.console import Console
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from consumer import terminal, times

PLAIN_EVERY_S = 2.0
CONTENT_WIDTH = 90


@dataclass(frozen=True, slots=True)
class Figures:
    """One look at the demo while it runs."""

    elapsed: float
    planned: int
    written: int
    shadowless: int
    alive: int
    shadows: int
    indexed: int
    events: dict[str, int]
    archived: int
    messages: int
    dead_letters: int
    errors: int
    sweeps: int
    mode: str
    p50: float | None
    p99: float | None


# --- latency -------------------------------------------------------------------------------------


Buckets = list[tuple[float, float]]


def buckets(histogram: Histogram) -> Buckets:
    """(upper bound, cumulative count) of every bucket of an unlabelled histogram."""
    found = [
        (float(sample.labels["le"]), sample.value)
        for metric in histogram.collect()
        for sample in metric.samples
        if sample.name.endswith("_bucket")
    ]
    return sorted(found)


def since(now: Buckets, before: Buckets) -> Buckets:
    """The bucket counts observed after `before` was taken."""
    earlier = dict(before)
    return [(bound, count - earlier.get(bound, 0.0)) for bound, count in now]


def quantile(counts: Buckets, q: float) -> float | None:
    """Prometheus's histogram_quantile: linear within the bucket that holds rank q."""
    total = counts[-1][1] if counts else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in counts:
        if count >= rank:
            if math.isinf(bound):
                return lower
            share = (rank - below) / (count - below) if count > below else 1.0
            return lower + (bound - lower) * share
        lower, below = bound, count
    return lower


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:.0f} ms"


# --- while it runs -------------------------------------------------------------------------------


def _rows(f: Figures) -> list[tuple[str, str]]:
    events = " · ".join(f"{name} {f.events.get(name, 0)}" for name in ("set", "expired", "expire"))
    return [
        ("checkpoints written", f"{f.written} of {f.planned} ({f.shadowless} without shadow)"),
        ("checkpoint keys alive", str(f.alive)),
        ("shadows pending", f"{f.shadows} (deadline index {f.indexed})"),
        ("keyspace events", events),
        ("archived", f"{f.archived} checkpoints, {f.messages} messages"),
        ("dead letters", str(f.dead_letters)),
        ("archive latency", f"p50 {_ms(f.p50)} · p99 {_ms(f.p99)}"),
        ("consumer", f"mode {f.mode}, sweeps {f.sweeps}, errors {f.errors}"),
    ]


Rows = Sequence[tuple[str, str]]


def panel(f: Figures, title: str, about: Rows = ()) -> Panel:
    """The live view: a short title (whole at 80 columns), what runs, then the figures."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold cyan", justify="right")
    grid.add_column()
    for label, value in [*about, *_rows(f)]:
        grid.add_row(Text(label), Text(value))
    return Panel(grid, title=title, subtitle=f"{f.elapsed:.0f}s", expand=False)


def line(f: Figures) -> str:
    """The plain progress line printed when stdout is not a terminal."""
    return (
        f"[{f.elapsed:5.1f}s] written {f.written}/{f.planned} alive {f.alive}"
        f" shadows {f.shadows} events {sum(f.events.values())}"
        f" archived {f.archived} ({f.messages} messages) dead {f.dead_letters}"
        f" p50 {_ms(f.p50)} p99 {_ms(f.p99)} sweeps {f.sweeps} errors {f.errors}"
    )


class View:
    """A rich Live panel on a terminal; otherwise a progress line every couple of seconds."""

    def __init__(self, console: Console, title: str, about: Rows = ()) -> None:
        self.console = console
        self.title = title
        self.about = about
        self.live = console.is_terminal
        self._live: Live | None = None
        self._printed = -math.inf

    @property
    def every(self) -> float:
        """How often to look again."""
        return 0.25 if self.live else 0.5

    def __enter__(self) -> Self:
        if self.live:
            self._live = Live(console=self.console, refresh_per_second=4, transient=False)
            self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)

    def show(self, f: Figures, final: bool = False) -> None:
        if self._live is not None:
            self._live.update(panel(f, self.title, self.about), refresh=final)
        elif final or time.monotonic() - self._printed >= PLAIN_EVERY_S:
            self._printed = time.monotonic()
            self.console.print(line(f), markup=False, highlight=False, soft_wrap=True)


# --- the report ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """A message read back from conversation_history."""

    role: str
    at: datetime
    content: str
    summary: bool


@dataclass(slots=True)
class Report:
    """What the workload wrote, what the archiver did, and what SQL finds."""

    conversations: int
    written: int
    malformed: int
    shadowless: int
    archived: int
    messages: int
    dead_letters: int
    expected_messages: int
    rows: int
    duplicates: int
    missing: int
    short_conversations: list[str]
    expected_dead: int
    dead_rows: int
    keys_left: int
    late_customers: int
    rows_without_customer: int
    seconds: float
    p50: float | None
    p99: float | None
    sample_id: str = ""
    sample_about: str = ""
    sample: list[Row] = field(default_factory=list)

    @property
    def nothing_lost(self) -> bool:
        return (
            self.missing == 0
            and self.duplicates == 0
            and self.rows == self.expected_messages
            and self.dead_rows == self.expected_dead
            and self.keys_left == 0
        )


def verdict(r: Report) -> str:
    """The one line the demo exists for (figures from direct SQL counts)."""
    figures = (
        f"{r.rows - r.duplicates}/{r.expected_messages} expected messages in"
        f" conversation_history ({r.duplicates} duplicates), {r.dead_rows}/{r.expected_dead}"
        f" malformed checkpoints in archive_dead_letters, Redis keys left: {r.keys_left}"
    )
    if r.nothing_lost:
        return f"nothing lost: {figures}"
    lost = r.missing or r.dead_rows < r.expected_dead or r.keys_left
    return f"{'LOST' if lost else 'DUPLICATED'}: {figures}"


def _totals(r: Report) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    for name in ("", "checkpoints", "messages"):
        table.add_column(name, justify="left" if not name else "right")
    table.add_row("written", str(r.written), str(r.expected_messages))
    table.add_row("archived", str(r.archived), str(r.messages))
    table.add_row("dead-lettered", str(r.dead_letters), "")
    table.add_row("in PostgreSQL (SQL)", "", str(r.rows))
    return table


def _details(r: Report) -> list[str]:
    notes = [
        f"{r.conversations} conversations, {r.written} checkpoints ({r.shadowless} written without"
        f" a shadow, {r.malformed} malformed) in {r.seconds:.0f}s;"
        f" archive latency p50 {_ms(r.p50)}, p99 {_ms(r.p99)}",
        f"customers identified late: {r.late_customers} conversations,"
        f" {r.rows_without_customer} of their rows still without customer_id",
    ]
    if r.short_conversations:
        shown = ", ".join(r.short_conversations[:5])
        notes.append(f"conversations missing messages: {len(r.short_conversations)} ({shown})")
    return notes


def _clip(content: str) -> str:
    flat = " ".join(content.split())
    return flat if len(flat) <= CONTENT_WIDTH else flat[: CONTENT_WIDTH - 1] + "…"


def sample_table(rows: Iterable[Row]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    table.add_column("role")
    table.add_column("time")
    table.add_column("content", overflow="fold")
    for row in rows:
        role = f"{row.role} (summary)" if row.summary else row.role
        table.add_row(role, times.text(row.at), terminal.visible(_clip(row.content)))
    return table


def render(console: Console, r: Report) -> None:
    """The report; off a terminal each sentence stays on one line (for grep and logs)."""
    whole = not console.is_terminal
    console.print(_totals(r))
    for note in _details(r):
        console.print(Text(note), soft_wrap=whole)
    style = "bold green" if r.nothing_lost else "bold red"
    console.print(Text(verdict(r), style=style), soft_wrap=whole)
    if r.sample:
        title = f"conversation {r.sample_id} read back from PostgreSQL ({r.sample_about}):"
        console.print(Text(title, style="bold"), soft_wrap=whole)
        console.print(sample_table(r.sample))


def missing_by_conversation(
    expected: dict[str, int], found: dict[str, int]
) -> tuple[int, Sequence[str]]:
    """Messages expected but not found, and the conversations they belong to."""
    short = sorted(c for c, n in expected.items() if found.get(c, 0) < n)
    return sum(expected[c] - found.get(c, 0) for c in short), short

"""Retention: delete what each tenant's policy lets go, measured from the run's start.

A run, top-down:

1. plan: the policies (consumer/policies.py), the monthly partitions, the tenants in each past
   month (a skip scan), each tenant's cutoff = the run's start (PostgreSQL's clock) - its keep;
2. finish what an interrupted run left: partitions detached or detach pending are dropped;
3. drop whole partitions: a month wholly before the current one goes when every tenant with
   rows in it lets the whole month go (an empty one when any policy exists);
4. delete the rest in batches per tenant, oldest first, keyed on (tenant_id, "timestamp"):
   a few thousand rows per short transaction, which records the conversations it touched;
5. settle `conversations`: each touched conversation's started_at becomes its first message
   left, or its row is removed when none is left (row locks taken in the archiver's order).

Rows of transactions not yet committed are invisible to the deletes: a message the archiver is
inserting is never deleted. Every step commits what the next needs (retention_touched,
retention_dropped), so a run killed at any moment leaves a state the next run completes.

`export` policies delete a tenant's month only when the cold tier says a verified copy covers
it (ExportGate: consumer/cold/gate.py when ARCHIVER_COLD_URL is set; without it, NO_COLD_TIER keeps
everything), and only while it still does: steps 3 and 4 hold a release of such a month
(consumer/releases.py), which stops them as soon as a row is archived into it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol

import asyncpg
import structlog
from rich.text import Text
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_random_exponential

from consumer import jobs, partitions, policies, queries, releases, terminal, times
from consumer.partitions import Partition

log = structlog.get_logger("consumer.retention")

SETTLE_BATCH = 1000  # conversations settled per transaction
MAX_LINES = 1000  # per-tenant-month lines kept in a run's report
RETRYABLE = (
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.LockNotAvailableError,
)

Connection = jobs.Connection


# --- the cold tier's hook ------------------------------------------------------------------------


class ExportGate(Protocol):
    """What `--then export` waits for. Asked for a tenant's month wholly past its keep period,
    with the number of rows it has in PostgreSQL now: None lets the rows go (a verified copy
    in the cold tier covers every one of them), otherwise the reason they stay."""

    async def releasable(
        self, conn: Connection, tenant: str, month: date, rows: int
    ) -> str | None: ...


class ColdTierMissing:
    """The gate without a cold tier (ARCHIVER_COLD_URL unset): `export` keeps every row."""

    REASON = "export: no verified cold copy (no cold tier configured)"

    async def releasable(self, conn: Connection, tenant: str, month: date, rows: int) -> str | None:
        return self.REASON


NO_COLD_TIER = ColdTierMissing()


# --- the plan ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Expiry:
    """A tenant's policy applied at the run's start: its rows before `cutoff` expire."""

    tenant: str
    policy: policies.Policy
    cutoff: datetime

    def whole(self, p: Partition) -> bool:
        return p.upper <= self.cutoff


@dataclass(frozen=True, slots=True)
class Span:
    """A tenant's rows in [lower, upper) of one month, to delete in batches."""

    tenant: str
    month: date
    lower: datetime
    upper: datetime


@dataclass(frozen=True, slots=True)
class Line:
    """What goes (or would go) of a tenant's month, or why it stays."""

    tenant: str
    month: date
    rows: int
    conversations: int
    action: str  # drop partition | delete | keep
    reason: str | None = None

    def as_item(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "month": self.month.strftime("%Y-%m"),
            "rows": self.rows,
            "conversations": self.conversations,
            "action": self.action,
            "reason": self.reason,
        }


@dataclass(slots=True)
class Plan:
    started_at: datetime
    policies: policies.Policies
    months: list[Partition] = field(default_factory=list)  # attached, holding expired rows
    tenants_in: dict[str, list[str]] = field(default_factory=dict)  # partition -> tenants
    expiries: dict[str, Expiry] = field(default_factory=dict)
    unmanaged: list[str] = field(default_factory=list)  # tenants with rows and no policy
    drops: list[Partition] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)
    kept: list[Line] = field(default_factory=list)
    leftovers: list[Partition] = field(default_factory=list)

    def exports(self, tenant: str) -> bool:
        """Whether the tenant's expired rows go only where a cold copy covers them."""
        expiry = self.expiries.get(tenant)
        return expiry is not None and expiry.policy.then == "export"

    def allowed(self, month: Partition) -> list[str]:
        """Tenants (with rows in attached months) whose policy deletes the whole month."""
        return sorted(
            t for t, e in self.expiries.items() if e.whole(month) and e.policy.then == "delete"
        )


async def plan(conn: Connection, started_at: datetime, gate: ExportGate) -> Plan:
    """What a run starting at `started_at` deletes, and how."""
    found = Plan(started_at, await policies.load(conn))
    tables = await partitions.listing(conn)
    this_month = partitions.month_start(started_at)
    found.leftovers = [t for t in tables if t.state != "attached" and t.upper <= this_month]
    if not found.policies.all():
        return found
    found.months = [t for t in tables if t.state == "attached" and t.lower < started_at]
    for month in found.months:
        rows = await conn.fetch(queries.get("retention_tenants"), month.lower, month.upper)
        found.tenants_in[month.name] = [r["tenant_id"] for r in rows]
    _expiries(found)
    for month in found.months:
        await _decide(conn, found, month, gate)
    return found


def _expiries(found: Plan) -> None:
    tenants = sorted({t for names in found.tenants_in.values() for t in names})
    for tenant in tenants:
        policy = found.policies.for_tenant(tenant)
        if policy is None:
            found.unmanaged.append(tenant)
        else:
            found.expiries[tenant] = Expiry(tenant, policy, found.started_at - policy.keep)


async def _decide(conn: Connection, found: Plan, month: Partition, gate: ExportGate) -> None:
    """Drop the month whole, or delete spans of it per tenant (or keep them)."""
    tenants = found.tenants_in[month.name]
    past = month.upper <= partitions.month_start(found.started_at)
    released = {t: await _released(conn, found, month, t, gate) for t in tenants}
    if past and all(reason is None for reason in released.values()):
        found.drops.append(month)
        return
    for tenant, reason in released.items():
        expiry = found.expiries.get(tenant)
        if expiry is None or month.lower >= expiry.cutoff:
            continue
        if reason is None or (expiry.policy.then == "delete" and not expiry.whole(month)):
            upper = min(month.upper, expiry.cutoff)
            found.spans.append(Span(tenant, month.month, month.lower, upper))
        else:  # export: not wholly expired yet, or no verified copy
            found.kept.append(await _kept(conn, tenant, month, expiry, reason))


async def _released(
    conn: Connection, found: Plan, month: Partition, tenant: str, gate: ExportGate
) -> str | None:
    """None if the tenant lets the whole month go; else why not ('' when it simply has rows
    younger than its cutoff in it)."""
    expiry = found.expiries.get(tenant)
    if expiry is None:
        return "no retention policy"
    if not expiry.whole(month):
        return ""
    if expiry.policy.then == "delete":
        return None
    rows, _ = await _count(conn, tenant, month.lower, month.upper)
    return await gate.releasable(conn, tenant, month.month, rows)


async def _kept(
    conn: Connection, tenant: str, month: Partition, expiry: Expiry, reason: str
) -> Line:
    upper = min(month.upper, expiry.cutoff)
    if not expiry.whole(month):
        reason = "export: waits until the whole month is past its keep period"
    rows, conversations = await _count(conn, tenant, month.lower, upper)
    return Line(tenant, month.month, rows, conversations, "keep", reason)


async def _count(
    conn: Connection, tenant: str, lower: datetime, upper: datetime
) -> tuple[int, int]:
    row = jobs.one(await conn.fetchrow(queries.get("retention_count"), tenant, lower, upper))
    return int(row["rows"]), int(row["conversations"])


# --- the report ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Report:
    """What a run did (or a dry run would do), as the job's counts."""

    plan: Plan
    dry_run: bool
    method: str
    lines: list[Line] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    postponed: list[str] = field(default_factory=list)
    leftovers_dropped: list[str] = field(default_factory=list)
    rows_dropped: int = 0
    rows_deleted: int = 0
    conversations_updated: int = 0
    conversations_removed: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, line: Line) -> None:
        self.lines.append(line)
        if line.action == "drop partition":
            self.rows_dropped += line.rows
        elif line.action == "delete":
            self.rows_deleted += line.rows

    def counts(self) -> jobs.Counts:
        p = self.plan
        lines = sorted(self.lines + p.kept, key=lambda x: (x.tenant, x.month, x.action))
        return {
            "dry_run": self.dry_run,
            "started_at": p.started_at,
            "drop_method": self.method,
            "policies": [policy.as_item() for policy in p.policies.all()],
            "cutoffs": {t: e.cutoff for t, e in sorted(p.expiries.items())},
            "unmanaged_tenants": p.unmanaged,
            "partitions_dropped": self.dropped,
            "partitions_postponed": self.postponed,
            "leftovers_dropped": self.leftovers_dropped,
            "rows_dropped": self.rows_dropped,
            "rows_deleted": self.rows_deleted,
            "rows_kept_for_export": sum(line.rows for line in p.kept),
            "conversations_updated": self.conversations_updated,
            "conversations_removed": self.conversations_removed,
            "seconds": self.seconds,
            "items": [line.as_item() for line in lines[:MAX_LINES]],
            "items_omitted": max(0, len(lines) - MAX_LINES),
        }


COLUMNS = [
    terminal.column("tenant", "tenant", "id"),
    terminal.column("month", "month"),
    terminal.column("rows", "rows", "number"),
    terminal.column("conversations", "conversations", "number", drop=1),
    terminal.column("action", "action"),
    terminal.column("reason", "reason", "prose"),
]


def render(report: jobs.Counts, out: Any) -> None:
    """A run's report (or a dry run's) for people: per tenant and month, then the totals."""
    verb = "would go" if report["dry_run"] else "went"
    if report["items"]:
        terminal.listing(out, COLUMNS, report["items"])
    else:
        terminal.sentence(out, Text(f"nothing {verb}: no row is older than its policy"))
    for tenant, cutoff in report["cutoffs"].items():
        line = terminal.visible(tenant) + Text(f": rows before {_when(cutoff)} expire")
        terminal.sentence(out, line)
    if report["unmanaged_tenants"]:
        names = ", ".join(report["unmanaged_tenants"])
        terminal.sentence(out, Text("no policy, kept: ") + terminal.visible(names))
    terminal.sentence(out, Text(_totals(report, verb)))


def _when(cutoff: Any) -> str:
    return times.text(cutoff) if isinstance(cutoff, datetime) else str(cutoff)


def _totals(report: jobs.Counts, verb: str) -> str:
    dropped = ", ".join(report["partitions_dropped"]) or "none"
    return (
        f"partitions that {verb}: {dropped}; rows {report['rows_dropped']} with them,"
        f" {report['rows_deleted']} in batches; conversations updated"
        f" {report['conversations_updated']}, removed {report['conversations_removed']}"
    )


# --- dry run -------------------------------------------------------------------------------------


async def preview(conn: Connection, method: str, gate: ExportGate = NO_COLD_TIER) -> jobs.Counts:
    """What `retention apply` would delete now: per tenant and month, rows and conversations."""
    started_at = await conn.fetchval(queries.get("job_now"))
    found = await plan(conn, started_at, gate)
    report = Report(found, dry_run=True, method=method)
    for month in found.drops:
        for row in await conn.fetch(queries.get("retention_census"), month.lower, month.upper):
            report.add(_census_line(row, month))
    for span in found.spans:
        rows, conversations = await _count(conn, span.tenant, span.lower, span.upper)
        if rows:
            report.add(Line(span.tenant, span.month, rows, conversations, "delete"))
    report.dropped = [m.name for m in found.drops]
    report.leftovers_dropped = [m.name for m in found.leftovers]
    return report.counts()


def _census_line(row: asyncpg.Record | Any, month: Partition) -> Line:
    return Line(row["tenant_id"], month.month, row["rows"], row["conversations"], "drop partition")


# --- the job -------------------------------------------------------------------------------------


async def apply(ctx: jobs.Context, gate: ExportGate = NO_COLD_TIER) -> jobs.Counts:
    """The `retention` job (and `archiver retention apply`)."""
    async with ctx.pool.acquire() as conn:
        found = await plan(conn, ctx.started_at, gate)
    dropper = partitions.Dropper(ctx.pool, ctx.settings)
    report = Report(found, dry_run=False, method=dropper.how)
    run = _Run(ctx, report, dropper)
    await run.phase("leftovers", run.leftovers)
    await run.phase("drops", run.drops)
    await run.phase("deletes", run.deletes)
    await run.phase("settle", run.settle)
    return report.counts()


class _Run:
    """The steps of one retention run, each committing what the next one needs."""

    def __init__(self, ctx: jobs.Context, report: Report, dropper: partitions.Dropper) -> None:
        self.ctx = ctx
        self.report = report
        self.dropper = dropper
        self.spans = list(report.plan.spans)

    async def phase(self, name: str, step: Any) -> None:
        started = time.monotonic()
        self.ctx.counts["phase"] = name
        await step()
        self.report.seconds[name] = round(time.monotonic() - started, 3)
        log.info("retention.phase", phase=name, seconds=self.report.seconds[name],
                 rows_dropped=self.report.rows_dropped, rows_deleted=self.report.rows_deleted)  # fmt: skip

    async def leftovers(self) -> None:
        """Tables an interrupted run detached (or left detach pending): dropped if their
        tenants all let the month go now, else attached again (the plan then sees them)."""
        for table in self.report.plan.leftovers:
            result = await self.dropper.drop(table, self.report.plan.allowed(table))
            if result == "dropped":
                self.report.leftovers_dropped.append(table.name)

    async def drops(self) -> None:
        for month in self.report.plan.drops:
            async with contextlib.AsyncExitStack() as stack:
                held = [
                    await stack.enter_async_context(releases.held(self.ctx.pool, t, month.month))
                    for t in self._exporters(month)
                ]  # fmt: skip
                refused = [r for r in held if r.refused]
                if refused:
                    await self._refused(month, refused)
                else:
                    await self._drop(month)

    def _exporters(self, month: Partition) -> list[str]:
        return [t for t in self.report.plan.tenants_in[month.name] if self.report.plan.exports(t)]

    async def _drop(self, month: Partition) -> None:
        async with self.ctx.pool.acquire() as conn:
            census = await conn.fetch(
                queries.get("retention_census"), month.lower, month.upper,
                timeout=self.ctx.settings.job_timeout,
            )  # fmt: skip
        result = await self.dropper.drop(month, self.report.plan.tenants_in[month.name])
        if result == "dropped":
            self._dropped(month, census)
        else:
            self._postponed(month)

    async def _refused(self, month: Partition, refused: list[releases.Release]) -> None:
        """A month whose cold copy no longer covers an `export` tenant's rows: those stay, the
        other tenants' rows go in batches."""
        self.report.postponed.append(month.name)
        for release in refused:
            await self._keep(Span(release.tenant, month.month, month.lower, month.upper),
                             month.lower, str(release.refused))  # fmt: skip
        kept = {r.tenant for r in refused}
        for tenant in self.report.plan.tenants_in[month.name]:
            if tenant not in kept:
                self.spans.append(Span(tenant, month.month, month.lower, month.upper))

    async def _keep(self, span: Span, lower: datetime, reason: str) -> None:
        async with self.ctx.pool.acquire() as conn:
            rows, conversations = await _count(conn, span.tenant, lower, span.upper)
        if rows:
            line = Line(span.tenant, span.month, rows, conversations, "keep", reason)
            self.report.plan.kept.append(line)

    def _dropped(self, month: Partition, census: list[Any]) -> None:
        self.report.dropped.append(month.name)
        for row in census:
            self.report.add(_census_line(row, month))
        self.ctx.counts.update(
            partitions_dropped=len(self.report.dropped), rows_dropped=self.report.rows_dropped
        )

    def _postponed(self, month: Partition) -> None:
        """A plain DETACH never got its lock, or a tenant not planned for has rows in the
        month now: this run deletes the planned tenants' rows of it in batches."""
        self.report.postponed.append(month.name)
        for tenant in self.report.plan.tenants_in[month.name]:
            self.spans.append(Span(tenant, month.month, month.lower, month.upper))

    async def deletes(self) -> None:
        for span in self.spans:
            if self.report.plan.exports(span.tenant):
                rows, conversations = await self._delete_released(span)
            else:
                rows, conversations = await self._delete(span)
            if rows:
                self.report.add(Line(span.tenant, span.month, rows, conversations, "delete"))

    async def _delete_released(self, span: Span) -> tuple[int, int]:
        """An `export` tenant's month, while a release says its cold copy covers it."""
        async with releases.held(self.ctx.pool, span.tenant, span.month) as release:
            if release.refused:
                await self._keep(span, span.lower, release.refused)
                return 0, 0
            return await self._delete(span, release)

    async def _delete(self, span: Span, release: releases.Release | None = None) -> tuple[int, int]:
        """Batches over the span, oldest first; each starts where the last one ended (a batch
        takes every row at its last microsecond, so it may hold a few more than `size`)."""
        size = self.ctx.settings.retention_batch
        lower, rows, conversations = span.lower, 0, 0
        while True:
            got = await self._batch(span, lower, size, release)
            rows += got["rows"]
            conversations += got["conversations"]
            self.ctx.counts["rows_deleted"] = self.report.rows_deleted + rows
            if release is not None and got["late"]:
                await self._keep(span, lower, LATE)
            if got["exhausted"]:
                return rows, conversations
            lower = got["next"]

    async def _paced(self, started: float) -> None:
        """Sleep so that batches keep the database busy ARCHIVER_RETENTION_DUTY of the time:
        archiving shares the machine (measured in `make bench`, scenario retention)."""
        busy = time.monotonic() - started
        await asyncio.sleep(busy * (100 / self.ctx.settings.retention_duty - 1))

    async def _batch(
        self, span: Span, lower: datetime, size: int, release: releases.Release | None
    ) -> Any:
        started = time.monotonic()
        try:
            return await self._unpaced_batch(*_batch_query(span, lower, size, release))
        finally:
            await self._paced(started)

    async def _unpaced_batch(self, query: str, *args: Any) -> Any:
        async for attempt in _retrying():
            with attempt:
                async with self.ctx.pool.acquire() as conn:
                    return await conn.fetchrow(query, *args, timeout=self.ctx.settings.job_timeout)
        raise AssertionError("unreachable: tenacity reraises")

    async def settle(self) -> None:
        async with self.ctx.pool.acquire() as conn:
            for row in await conn.fetch(queries.get("retention_dropped_months")):
                await conn.fetchval(queries.get("retention_touch_dropped"), row["month"])
        while True:
            started = time.monotonic()
            more = await self._settle_batch()
            await self._paced(started)
            if not more:
                return

    async def _settle_batch(self) -> bool:
        """Settle up to SETTLE_BATCH touched conversations; False when none was left."""
        async for attempt in _retrying():
            with attempt:
                async with self.ctx.pool.acquire() as conn:
                    batch = await conn.fetch(queries.get("retention_touched_batch"), SETTLE_BATCH)
                    if not batch:
                        return False
                    keys = [[r["tenant_id"] for r in batch], [r["conversation_id"] for r in batch]]
                    settle = queries.get("retention_settle_conversations")
                    done = jobs.one(await conn.fetchrow(settle, *keys))
        self.report.conversations_updated += done["updated"]
        self.report.conversations_removed += done["removed"]
        return True


LATE = "export: rows arrived during this run (the next run exports them first)"


def _batch_query(
    span: Span, lower: datetime, size: int, release: releases.Release | None
) -> tuple[Any, ...]:
    if release is None:
        return queries.get("retention_delete_batch"), span.tenant, lower, span.upper, size
    return queries.get("retention_delete_released_batch"), release.id, lower, size


def _retrying() -> AsyncRetrying:
    """Lock conflicts with archive batches (a deadlock is possible with a customer back-fill)
    are retried; anything else fails the run, which the next one completes."""
    return AsyncRetrying(
        retry=retry_if_exception_type(RETRYABLE),
        stop=stop_after_attempt(5),
        wait=wait_random_exponential(multiplier=0.2, max=5),
        reraise=True,
    )

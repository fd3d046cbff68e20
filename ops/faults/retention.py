"""Scenario `retention`: retention runs killed with SIGKILL at random moments while the archiver
archives the workload; then a run completes. Each round seeds months of history for three
tenants with different policies (14 days, 60 days, and the 150-day default), so that every run
has whole partitions to drop and rows to delete in batches, starts `archiver retention apply`
and kills it a random moment into one of its phases (drops, deletes, settle, or anywhere, in
turn); the next claimant finds the run interrupted.

The oracle, from the seeds themselves (never from retention's own counts). A run starting at T
may delete a row only if it is older than T - keep, and every run starts before the oracle
looks (at E), so:

* nothing younger than its policy is ever deleted: every seeded row younger than E - keep is
  still there;
* the last run completed the work: no seeded row is older than F - keep (F: the start of the
  last run, which completed), every `conversations` row matches the rows left, retention's
  bookkeeping is empty, no partition is left detached;
* the kills landed in runs (recorded as `interrupted`);
* and, as in every scenario, the workload's messages: nothing lost, nothing duplicated.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
import orjson

from consumer import partitions, policies
from ops import seed
from ops.faults.procs import Proc
from ops.faults.runner import Run

TENANTS = ("seed-privacy", "seed-support", "seed-regulated")
KEEP_DAYS: dict[str | None, int] = {"seed-privacy": 14, "seed-support": 60, None: 150}
FINAL_WITHIN_S = 120.0
PHASES = ("leftovers", "drops", "deletes", "settle")
TARGETS = ("drops", "deletes", "settle", "any")  # where the kill of each round aims

CONSISTENT_SQL = """
SELECT count(*) FROM conversations c
FULL JOIN (SELECT tenant_id, conversation_id, min("timestamp") AS first
           FROM conversation_history GROUP BY 1, 2) h USING (tenant_id, conversation_id)
WHERE h.first IS NULL OR c.started_at IS DISTINCT FROM h.first
"""
SEEDED_SQL = """
SELECT tenant_id, conversation_id, message_key FROM conversation_history
WHERE tenant_id = ANY($1::text[])
"""
LEFT_SQL = (
    "SELECT (SELECT count(*) FROM retention_touched) + (SELECT count(*) FROM retention_dropped)"
)
RUNS_SQL = "SELECT status, started_at, counts FROM job_runs WHERE job = 'retention' ORDER BY id"
RUNNING_SQL = "SELECT count(*) FROM job_runs WHERE job = 'retention' AND status = 'running'"
HELD_SQL = """
SELECT count(*) FROM job_leases WHERE job = 'retention' AND expires_at > clock_timestamp()
"""

Row = tuple[str, str, str]  # tenant, conversation, message key


@dataclass(frozen=True, slots=True)
class Size:
    months: int
    rows: int  # seeded per round
    batch: int  # ARCHIVER_RETENTION_BATCH: small, so that a run lasts long enough to be hit
    rounds: int
    kill_within_s: float


def size(quick: bool) -> Size:
    return Size(8, 24_000, 20, 4, 0.6) if quick else Size(12, 60_000, 50, 8, 2.0)


def keep(tenant: str) -> timedelta:
    return timedelta(days=KEEP_DAYS.get(tenant, KEEP_DAYS[None]))


@dataclass(slots=True)
class Seeded:
    """Every seeded row with its timestamp; the months that had a partition after seeding."""

    rows: dict[Row, datetime]
    months: set[str]


async def inject_retention(run: Run) -> None:
    run.ignored_tenants = TENANTS
    seeded = Seeded({}, set())
    conn = await asyncpg.connect(run.database_url, timeout=30)
    try:
        origin: datetime = await conn.fetchval("SELECT now()")
        for tenant, days in KEEP_DAYS.items():
            await policies.put(conn, policies.Policy(tenant, timedelta(days=days), "delete"))
        phases: Counter[str] = Counter()
        for round_ in range(size(run.quick).rounds):
            await _seed(run, conn, seeded, origin, round_)
            target = TARGETS[round_ % len(TARGETS)]
            phases[await _killed_run(run, conn, target)] += 1
        final = await _final_run(run, conn)
        await _judge(run, conn, seeded, final)
    finally:
        await conn.close()
    landed = sum(n for phase, n in phases.items() if phase not in ("missed", "skipped"))
    run.facts |= {"kills_by_phase_reached": dict(phases), "seeded_rows": len(seeded.rows)}
    run.checks["kills_landed_in_retention_runs"] = landed >= max(1, size(run.quick).rounds // 2)


async def _seed(
    run: Run, conn: asyncpg.Connection, seeded: Seeded, origin: datetime, round_: int
) -> None:
    """Another round of history, laid out relative to `origin` (new conversation ids)."""
    chosen = size(run.quick)
    shape = seed.Shape(tenants=TENANTS, months=chosen.months, rows=chosen.rows)
    prefix = f"seed{round_}"
    # One transaction: the consumer may start re-running an interrupted retention run at any
    # moment, and a month it dropped between the seed's partition and its COPY failed the run.
    async with conn.transaction():
        await seed.load(conn, shape, origin, prefix)
    for c in seed.conversations(shape, origin, prefix):
        for tenant, conversation, key, stamp in c.identities():
            seeded.rows[(tenant, conversation, key)] = stamp
    seeded.months |= {t.name for t in await partitions.listing(conn)}


async def _killed_run(run: Run, conn: asyncpg.Connection, target: str) -> str:
    """Start `archiver retention apply`, SIGKILL it a random moment into its `target` phase
    (its log says when the phase before ended; 'any': a random moment of the run); the phase
    its log shows it was in ('missed': the run had ended; 'skipped': another process held
    the lease). Then wait for the dead holder's lease to run out."""
    await _lease_free(conn)  # the consumer may be re-running an interrupted run: let it end
    proc = run.fleet.start("retention", "retention", "apply")
    if not await _run_started(proc, patience=30.0):
        return "skipped"
    if target != "any":
        await _phase_ended(proc, PHASES[PHASES.index(target) - 1], patience=60.0)
    await asyncio.sleep(run.rng.uniform(0.0, size(run.quick).kill_within_s / 4))
    going = proc.alive and bool(await conn.fetchval(RUNNING_SQL))
    run.fleet.kill(proc)
    await _lease_free(conn)
    return _last_phase(proc) if going else "missed"


async def _lease_free(conn: asyncpg.Connection) -> None:
    """Until nobody holds the retention lease (a killed holder's runs out in 3 s)."""
    for _ in range(600):  # 120 s at most
        if not await conn.fetchval(HELD_SQL):
            return
        await asyncio.sleep(0.2)


async def _run_started(proc: Proc, patience: float) -> bool:
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        if b'"job.started"' in _log(proc):
            return True
        if not proc.alive:
            return False
        await asyncio.sleep(0.02)
    return False


async def _phase_ended(proc: Proc, phase: str, patience: float) -> None:
    needle = b'"phase":"' + phase.encode() + b'"'
    for _ in range(int(patience / 0.005)):
        if not proc.alive or needle in _log(proc):
            return
        await asyncio.sleep(0.005)


def _log(proc: Proc) -> bytes:
    return proc.log_path.read_bytes() if proc.log_path.exists() else b""


def _last_phase(proc: Proc) -> str:
    """The phase the run was in when killed: after the last phase its log says it finished."""
    order = PHASES
    done = [
        orjson.loads(line).get("phase")
        for line in _log(proc).splitlines()
        if b'"retention.phase"' in line and line.startswith(b"{") and line.endswith(b"}")
    ]
    reached = len([p for p in done if p in order])
    return f"in {order[reached]}" if reached < len(order) else "at its end"


async def _final_run(run: Run, conn: asyncpg.Connection) -> datetime:
    """Run retention until a run completes (the consumer may take over an interrupted run
    meanwhile: then this one is skipped); the start of that run."""
    deadline = time.monotonic() + FINAL_WITHIN_S
    while time.monotonic() < deadline:
        proc = run.fleet.start("retention-final", "retention", "apply")
        await asyncio.to_thread(proc.popen.wait, FINAL_WITHIN_S)
        rows = await conn.fetch(RUNS_SQL)
        if rows and rows[-1]["status"] == "ok":
            started: datetime = rows[-1]["started_at"]
            return started
        await asyncio.sleep(1.0)
    raise TimeoutError("no retention run completed after the kills")


async def _judge(run: Run, conn: asyncpg.Connection, seeded: Seeded, final: datetime) -> None:
    end: datetime = await conn.fetchval("SELECT now()")
    left = {(r[0], r[1], r[2]) for r in await conn.fetch(SEEDED_SQL, list(TENANTS))}
    inconsistent = await conn.fetchval(CONSISTENT_SQL)
    bookkeeping = await conn.fetchval(LEFT_SQL)
    tables = await partitions.listing(conn)
    statuses = [r["status"] for r in await conn.fetch(RUNS_SQL)]
    young = {k for k, ts in seeded.rows.items() if ts >= end - keep(k[0])}
    old = {k for k, ts in seeded.rows.items() if ts < final - keep(k[0])}
    run.checks |= {
        "nothing_younger_than_its_policy_deleted": young <= left,
        "nothing_older_than_its_policy_left": not (old & left),
        "conversations_match_their_rows": inconsistent == 0,
        "retention_bookkeeping_empty": bookkeeping == 0,
        "no_partition_left_detached": all(t.state == "attached" for t in tables),
        "interrupted_runs_recorded": "interrupted" in statuses,
    }
    run.facts |= {
        "seeded_rows_left": len(left),
        "younger_rows_missing": len(young - left),
        "expired_rows_left": len(old & left),
        "inconsistent_conversations": inconsistent,
        "retention_runs": dict(Counter(statuses)),
        "partitions_dropped": sorted(seeded.months - {t.name for t in tables}),
        "final_run_started": final.isoformat(),
    }

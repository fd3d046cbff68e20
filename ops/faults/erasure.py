"""Scenario `erasure_race`: erasures of customers while the workload keeps writing checkpoints
of every customer, erased ones included (their agents write the old messages back, and new
ones), half the `archiver erase` processes SIGKILLed a random moment into their run; then every
unfinished erasure is resumed (`archiver erase --resume`).

The oracle, beside the usual one for everyone else (nothing lost, nothing duplicated; the
erased customers' conversations are left out of it):

* every erasure completed;
* nothing of an erased customer stamped at or before its requested_at is left anywhere: its
  rows, by our own query, and `archiver erase --verify` (Redis values, every table, dead
  letters) exits 0;
* the kills landed in erasures (some were left unfinished and had to be resumed).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg

from consumer import fences
from ops.faults.procs import Proc
from ops.faults.runner import Run

KEY = "faults-erasure-key-0123456789abcdef"
ROWS_LEFT_SQL = """
SELECT count(*) FROM conversation_history h JOIN erasures e ON e.id = $1
WHERE h.tenant_id = e.tenant_id AND h."timestamp" <= e.requested_at
  AND (h.customer_id = $2 OR h.conversation_id = $3)
"""
UNFINISHED_SQL = "SELECT id FROM erasures WHERE status <> 'completed' ORDER BY id"
KILL_AT = (b'"erasure.requested"', b'"step":"redis"', b'"step":"postgres"')
ERASURES_SQL = "SELECT id, subject_hash, status FROM erasures ORDER BY id"


@dataclass(frozen=True, slots=True)
class Erased:
    tenant: str
    customer: str
    conversation: str


def env(name: str) -> dict[str, str]:
    slow = {"ARCHIVER_ERASURE_BATCH": "1", "ARCHIVER_SCAN_COUNT": "10"}
    return {"ARCHIVER_ERASURE_KEY": KEY, "ARCHIVER_ERASURE_SCHEDULE": "off"} | (
        slow if name.startswith("erase-") else {}
    )


async def inject_erasure_race(run: Run) -> None:
    assert run.writer is not None
    await asyncio.sleep(run.windows.archive_after * 0.8)  # some archived, more in flight
    erased: list[Erased] = []
    rounds = 4 if run.quick else 10
    for round_ in range(rounds):
        chosen = _pick(run, erased)
        if chosen is None:
            break
        erased.append(chosen)
        await _erase(run, chosen, kill=round_ % 2 == 0)
        await asyncio.sleep(run.rng.uniform(0.2, 1.5))
    await run.writer.done.wait()
    run.ignored_conversations = {(e.tenant, e.conversation) for e in erased}
    conn = await asyncpg.connect(run.database_url, timeout=30)
    try:
        recorded = {r["subject_hash"]: r["id"] for r in await conn.fetch(ERASURES_SQL)}
        for who in erased:  # killed before its tombstone: erased again, whole
            if _hash(who) not in recorded:
                await _erase(run, who, kill=False)
        unfinished = [r["id"] for r in await conn.fetch(UNFINISHED_SQL)]
        for erasure_id in unfinished:
            proc = run.fleet.start(f"resume-{erasure_id}", "erase", "--resume", str(erasure_id))
            await _wait(proc)
        await _judge(run, conn, erased, len(unfinished))
    finally:
        await conn.close()


def _hash(who: Erased) -> str:
    return fences.subject_hash(KEY.encode(), who.tenant, "customer", who.customer)


def _pick(run: Run, erased: list[Erased]) -> Erased | None:
    """A customer with a string id (one conversation each) that has written something."""
    assert run.writer is not None
    taken = {e.conversation for e in erased}
    candidates = [
        c for c in run.writer.convs
        if isinstance(c.customer, str) and c.messages and c.cid not in taken
    ]  # fmt: skip
    if not candidates:
        return None
    conv = run.rng.choice(candidates)
    assert isinstance(conv.customer, str)
    return Erased(conv.tenant, conv.customer, conv.cid)


async def _erase(run: Run, who: Erased, *, kill: bool) -> None:
    """`archiver erase` of a customer; with `kill`, SIGKILLed as soon as its log shows it
    reached a point (in turn: its tombstone recorded, its Redis step done, its PostgreSQL
    step done); its steps run in batches of one row and SCAN pages of ten keys, so that the
    kill lands before the next step ends more often than not."""
    proc = run.fleet.start(
        f"erase-{who.customer}", "erase", "--tenant", who.tenant, "--customer", who.customer
    )
    if not kill:
        await _wait(proc)
        return
    needle = KILL_AT[run.rng.randrange(len(KILL_AT))]
    for _ in range(6000):  # 30 s at most
        if not proc.alive or needle in _log(proc):
            break
        await asyncio.sleep(0.005)
    if proc.alive:
        run.fleet.kill(proc)


def _log(proc: Proc) -> bytes:
    return proc.log_path.read_bytes() if proc.log_path.exists() else b""


async def _wait(proc: Proc) -> int:
    return await asyncio.to_thread(proc.popen.wait, 120)


async def _judge(run: Run, conn: asyncpg.Connection, erased: list[Erased], resumed: int) -> None:
    rows = {r["subject_hash"]: r for r in await conn.fetch(ERASURES_SQL)}
    left = verified = 0
    for who in erased:
        row = rows.get(_hash(who))
        if row is None:
            continue
        left += await conn.fetchval(ROWS_LEFT_SQL, row["id"], who.customer, who.conversation)
        proc = run.fleet.start(
            f"verify-{row['id']}", "erase", "--verify", str(row["id"]), "--customer", who.customer
        )
        verified += await _wait(proc) == 0
    run.checks |= {
        "every_erasure_recorded": len(rows) == len(erased) > 0,
        "every_erasure_completed": all(r["status"] == "completed" for r in rows.values()),
        "nothing_of_an_erased_customer_left_by_query": left == 0,
        "verify_passes_for_every_erasure": verified == len(erased),
        "some_erasures_were_interrupted_and_resumed": resumed > 0,
    }
    run.facts |= {"erasures": len(rows), "resumed": resumed, "rows_left": left}

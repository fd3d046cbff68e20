"""Scenario `cold_export`: exports to the cold tier SIGKILLed at random moments while the
archiver archives the workload; then an export completes. Each round kills `archiver cold
export --month M` a random moment after its staged file appeared (so, mid-write; the last
round aims later, around the move to the final name), the files landing on a local directory.

The oracle, from PostgreSQL and the files themselves:

* after every kill: no `archived_partitions` row, or one whose files verify (nothing recorded
  points at a file that is incomplete), and every file under a final name is a whole Parquet
  file (it opens and its rows can be read);
* after the final export: one current version, verified, whose files hold exactly the
  month's rows as PostgreSQL has them (same count, same content digest), no staged file left;
* and, as in every scenario, the workload's messages: nothing lost, nothing duplicated.
"""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from pathlib import Path

import asyncpg
import pyarrow.parquet as pq

from consumer.cold import digest, layout, records, storage, verify
from ops import seed
from ops.faults.runner import Run

TENANT = "seed-cold"
ROUNDS = (3, 6)  # quick, full


def env(run_dir: Path) -> dict[str, str]:
    return {"ARCHIVER_COLD_URL": f"file://{run_dir}", "ARCHIVER_COLD_GROUP_BYTES": "1048576"}


async def inject_cold_export(run: Run, root: Path) -> None:
    run.ignored_tenants = (TENANT,)
    conn = await asyncpg.connect(run.database_url, timeout=30)
    try:
        now: datetime = await conn.fetchval("SELECT now()")
        rows = 60_000 if run.quick else 200_000
        await seed.load(
            conn, seed.Shape((TENANT,), months=2, rows=rows, chars=300, crossing=False), now
        )
        month = (now.replace(day=1) - timedelta(days=1)).date().replace(day=1)
        landed, whole = 0, True
        for round_ in range(ROUNDS[0] if run.quick else ROUNDS[1]):
            landed += await _killed_export(run, root, month, late=round_ % 3 == 2)
            whole = whole and _finals_whole(root) and await _recorded_ok(conn, root, month)
        await _final(run, conn, root, month)
    finally:
        await conn.close()
    run.checks["kills_landed_mid_export"] = landed >= 1
    run.checks["nothing_half_visible_after_any_kill"] = whole
    run.facts |= {"kills_mid_export": landed}


async def _killed_export(run: Run, root: Path, month: date, late: bool) -> int:
    """1 if the kill landed while the export was writing (its staged file existed)."""
    proc = run.fleet.start("cold", "cold", "export", "--month", f"{month:%Y-%m}")
    staging = root / layout.STAGING
    for _ in range(6000):  # 60 s at most
        if not proc.alive or any(p.stat().st_size > 0 for p in staging.rglob("*.parquet")):
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(run.rng.uniform(0.3, 1.5) if late else run.rng.uniform(0.0, 0.3))
    writing = proc.alive
    run.fleet.kill(proc)
    await asyncio.to_thread(proc.popen.wait, 30)
    return int(writing)


def _finals_whole(root: Path) -> bool:
    try:
        for path in (root / layout.TABLE).rglob("*.parquet"):
            for _ in pq.ParquetFile(path).iter_batches(65_536, columns=list(digest.COLUMNS)):
                pass
    except Exception:
        return False
    return True


async def _recorded_ok(conn: asyncpg.Connection, root: Path, month: date) -> bool:
    record = await records.current(conn, TENANT, month)
    if record is None:
        return True
    where = storage.open_url(f"file://{root}")
    return await asyncio.to_thread(verify.problem_of, where, record) is None


async def _final(run: Run, conn: asyncpg.Connection, root: Path, month: date) -> None:
    proc = run.fleet.start("cold-final", "cold", "export", "--month", f"{month:%Y-%m}")
    code = await asyncio.to_thread(proc.popen.wait, 300)
    record = await records.current(conn, TENANT, month)
    now = await records.stats(conn, TENANT, month)
    staged = list((root / layout.STAGING).rglob("*.parquet"))
    run.checks |= {
        "final_export_completed": code == 0,
        "final_export_verified": record is not None and record["verified_at"] is not None,
        "files_hold_exactly_the_months_rows": records.covers(record, now),
        "no_staged_file_left": not staged,
    }
    run.facts |= {"month_rows": now.rows, "versions": await conn.fetchval(
        "SELECT count(*) FROM archived_partitions WHERE tenant_id = $1", TENANT)}  # fmt: skip

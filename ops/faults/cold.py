"""Scenario `cold_export`: exports to the cold tier SIGKILLed at random moments while the
archiver archives the workload; then an export completes. Each round kills `archiver cold
export --month M` a random moment after its staged file appeared (so, mid-write; the last
round aims later, around the move to the final name), the files landing on a local directory.
Rounds take the formats in turn (Parquet, zstd JSON lines, gzip JSON lines): each round after
one that recorded a version is a format change, so kills also land while a month moves from
one format to another; the final export uses the last round's format.

The oracle, from PostgreSQL and the files themselves:

* after every kill: no `archived_partitions` row, or one whose files verify (nothing recorded
  points at a file that is incomplete; files beside it, left by a format change killed while
  moving its files, are for the next export in that format to clear), and every file under a
  final name is a whole file of its format (it opens and its rows can be read);
* after the final export: one current version, verified, whose files hold exactly the
  month's rows as PostgreSQL has them (same count, same content digest), and no other part
  file beside them, no staged file left;
* and, as in every scenario, the workload's messages: nothing lost, nothing duplicated.
"""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from pathlib import Path

import asyncpg

from consumer.cold import digest, files, formats, layout, records, storage, verify
from ops import seed
from ops.faults.runner import Run

TENANT = "seed-cold"
ROUNDS = (3, 6)  # quick, full
FORMATS = ("parquet", "jsonl.zst", "jsonl.gz")  # a round's, in turn; a process name ends with it


def env(run_dir: Path, name: str = "cold") -> dict[str, str]:
    """A cold process's environment; its format from its name's last part (`cold-jsonl.gz`)."""
    chosen = {"ARCHIVER_COLD_URL": f"file://{run_dir}", "ARCHIVER_COLD_GROUP_BYTES": "1048576"}
    suffix = name.rsplit("-", 1)[-1]
    if suffix in FORMATS:
        fmt = formats.of_name(suffix)
        chosen |= {"ARCHIVER_COLD_FORMAT": fmt.name, "ARCHIVER_COLD_COMPRESSION": fmt.compression}
    return chosen


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
        landed, whole, fmt = 0, True, FORMATS[0]
        for round_ in range(ROUNDS[0] if run.quick else ROUNDS[1]):
            fmt = FORMATS[round_ % len(FORMATS)]
            landed += await _killed_export(run, root, month, fmt, late=round_ % 3 == 2)
            whole = whole and _finals_whole(root) and await _recorded_ok(conn, root, month)
        await _final(run, conn, root, month, fmt)
    finally:
        await conn.close()
    run.checks["kills_landed_mid_export"] = landed >= 1
    run.checks["nothing_half_visible_after_any_kill"] = whole
    run.facts |= {"kills_mid_export": landed}


async def _killed_export(run: Run, root: Path, month: date, fmt: str, late: bool) -> int:
    """1 if the kill landed while the export was writing (its staged file existed)."""
    proc = run.fleet.start(f"cold-{fmt}", "cold", "export", "--month", f"{month:%Y-%m}")
    staging = root / layout.STAGING
    for _ in range(6000):  # 60 s at most
        if not proc.alive or any(p.stat().st_size > 0 for p in staging.rglob(f"*.{fmt}")):
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(run.rng.uniform(0.3, 1.5) if late else run.rng.uniform(0.0, 0.3))
    writing = proc.alive
    run.fleet.kill(proc)
    await asyncio.to_thread(proc.popen.wait, 30)
    return int(writing)


def _finals_whole(root: Path) -> bool:
    """Every part file under a final name reads to its end in its format."""
    where = storage.open_url(f"file://{root}")
    try:
        for path in (root / layout.TABLE).rglob(f"{layout.PART_PREFIX}*"):
            fmt = formats.of_name(path.name.split(".", 1)[1])
            relative = str(path.relative_to(root))
            for _ in files.batches(where, relative, fmt, 65_536, digest.COLUMNS):
                pass
    except Exception:
        return False
    return True


async def _recorded_ok(conn: asyncpg.Connection, root: Path, month: date) -> bool:
    record = await records.current(conn, TENANT, month)
    if record is None:
        return True
    where = storage.open_url(f"file://{root}")
    return await asyncio.to_thread(verify.problem_of, where, record, False) is None


async def _final(run: Run, conn: asyncpg.Connection, root: Path, month: date, fmt: str) -> None:
    proc = run.fleet.start(f"cold-final-{fmt}", "cold", "export", "--month", f"{month:%Y-%m}")
    code = await asyncio.to_thread(proc.popen.wait, 300)
    record = await records.current(conn, TENANT, month)
    now = await records.stats(conn, TENANT, month)
    staged = list((root / layout.STAGING).rglob(f"{layout.PART_PREFIX}*"))
    where = storage.open_url(f"file://{root}")
    alone = record is not None and await asyncio.to_thread(verify.problem_of, where, record) is None
    run.checks |= {
        "final_export_completed": code == 0,
        "final_export_verified": record is not None and record["verified_at"] is not None,
        "files_hold_exactly_the_months_rows": records.covers(record, now),
        "no_other_part_file_beside_them": alone,
        "no_staged_file_left": not staged,
    }
    run.facts |= {"month_rows": now.rows, "versions": await conn.fetchval(
        "SELECT count(*) FROM archived_partitions WHERE tenant_id = $1", TENANT)}  # fmt: skip

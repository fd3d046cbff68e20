"""Scenario `cold`: one tenant's month of seed-like history exported to the cold tier, in the
format `--cold-format` names (parquet, jsonl.zst or jsonl.gz).

* floor: the same rows read with a bare `COPY (...) TO` a CSV file, then pyarrow reading that
  file and writing one file of the format (zstd Parquet; or JSON lines, encoded and
  compressed as the export does) with nothing streamed, hashed or checked: the least work
  that turns the month into such a file on this machine, in the same run;
* export: `consumer.cold.export.export_month` in a child process of its own (so that its peak
  RSS, VmHWM, is the export's alone): rows/s, files, bytes;
* compression: PostgreSQL's size of the month (pg_total_relation_size of its partition,
  indexes and TOAST included; also the heap and TOAST alone) over the files' bytes;
* verify: `verify.verify_record` (every byte read back, hashed, rows digested), rows/s;
* restore: the month's rows deleted, then `restore.restore` puts them back, rows/s.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from consumer import jobs, queries
from consumer.cold import export, files, formats, records, restore, storage, verify
from consumer.cold.formats import Format
from ops import seed

from . import procs
from .common import Context, Result, pg_connection, ratio, rounded

TENANT = "acme"


async def run(ctx: Context) -> Result:
    dsn = await ctx.stack.fresh_database("cold")
    folder = ctx.folder("cold")
    url = f"file://{folder / 'files'}"
    fmt = formats.of_name(ctx.cfg.cold_format)
    month, rows, sizes, load_s = await _seed(dsn, ctx.cfg.cold_rows)
    floor_s = await _floor(dsn, month, folder, fmt)
    exported = await _export_child(ctx, dsn, url, month, fmt)
    verify_s, restore_s, restored = await _verify_and_restore(dsn, url, month)
    size = exported["compressed_size"]
    return {
        "format": fmt.label,
        "rows": rows,
        "seed_s": load_s,
        "floor_s": rounded(floor_s, 2),
        "floor_rows_per_s": rounded(rows / floor_s),
        "export_s": exported["seconds"],
        "export_rows_per_s": rounded(rows / exported["seconds"]),
        "ratio_vs_floor": ratio(floor_s, exported["seconds"]),
        "files": exported["files"],
        "compressed_bytes": size,
        "pg_total_bytes": sizes["total"],
        "pg_heap_toast_bytes": sizes["heap"],
        "compression_vs_table": ratio(sizes["total"], size),
        "compression_vs_heap": ratio(sizes["heap"], size),
        "peak_rss_mb": exported["peak_rss_mb"],
        "verify_rows_per_s": rounded(rows / verify_s),
        "restore_rows": restored,
        "restore_rows_per_s": rounded(restored / restore_s),
    }


async def _seed(dsn: str, rows: int) -> tuple[date, int, dict[str, int], float]:
    """`rows` over this month and the last (seed-like content); the last month's figures."""
    async with pg_connection(dsn) as conn:
        now: datetime = await conn.fetchval("SELECT now()")
        started = time.monotonic()
        await seed.load(
            conn, seed.Shape(tenants=(TENANT,), months=2, rows=rows, crossing=False), now
        )
        await conn.execute("VACUUM ANALYZE conversation_history")
        load_s = round(time.monotonic() - started, 1)
        month = (now.replace(day=1) - timedelta(days=1)).date().replace(day=1)
        count = (await records.stats(conn, TENANT, month)).rows
        name = f"conversation_history_{month:%Y_%m}"
        sizes = jobs.one(
            await conn.fetchrow(
            "SELECT pg_total_relation_size($1::regclass) AS total,"
            " pg_table_size($1::regclass) AS heap", name,
            )
        )  # fmt: skip
    return month, count, {"total": sizes["total"], "heap": sizes["heap"]}, load_s


async def _floor(dsn: str, month: date, folder: Path, fmt: Format) -> float:
    """Seconds of: COPY the month's rows to a CSV file, then pyarrow → one file of `fmt`."""
    csv, parquet = folder / "floor.csv", folder / f"floor{fmt.suffix}"
    lower, upper = records.bounds(month)
    started = time.monotonic()
    async with pg_connection(dsn) as conn:
        await conn.copy_from_query(
            queries.get("cold_month_copy"), TENANT, lower, upper, output=csv, format="csv"
        )
    await asyncio.to_thread(_csv_to_file, csv, parquet, fmt)
    took = time.monotonic() - started
    csv.unlink()
    parquet.unlink()
    return took


def _csv_to_file(csv: Path, target: Path, fmt: Format) -> None:
    options = pacsv.ReadOptions(column_names=list(export.COPY_COLUMNS))
    parse = pacsv.ParseOptions(newlines_in_values=True)
    convert = pacsv.ConvertOptions(column_types=export.COPY_COLUMNS)
    with pacsv.open_csv(
        csv, read_options=options, parse_options=parse, convert_options=convert
    ) as reader:
        if fmt.name == "parquet":
            with pq.ParquetWriter(target, reader.schema, compression="zstd") as out:
                for batch in reader:
                    out.write_batch(batch)
            return
        lines = files.writer(target.open("wb"), fmt)
        for batch in reader:
            lines.write(pa.Table.from_batches([export._as_file_batch(batch)]))
        lines.close()


async def _export_child(
    ctx: Context, dsn: str, url: str, month: date, fmt: Format
) -> dict[str, Any]:
    log = ctx.folder("cold") / "export.log"
    argv = [sys.executable, "-m", "ops.bench.cold", dsn, url, month.isoformat(), fmt.suffix[1:]]
    code = await procs.run_to_end(argv, ctx.env("cold", dsn), log, within=3600)
    if code != 0:
        raise RuntimeError(f"the cold export child exited {code}; see {log}")
    lines = [line for line in log.read_text().splitlines() if line.startswith('{"bench"')]
    found: dict[str, Any] = json.loads(lines[-1])["bench"]
    return found


async def _verify_and_restore(dsn: str, url: str, month: date) -> tuple[float, float, int]:
    where = storage.open_url(url)
    async with pg_connection(dsn) as conn:
        record = jobs.one(await records.current(conn, TENANT, month))
        started = time.monotonic()
        checked = await verify.verify_record(conn, where, record)
        verify_s = time.monotonic() - started
        if not checked.ok:
            raise RuntimeError(f"the bench's export fails verify: {checked.problem}")
        lower, upper = records.bounds(month)
        await conn.execute(
            "DELETE FROM conversation_history WHERE tenant_id = $1 AND \"timestamp\" >= $2"
            " AND \"timestamp\" < $3", TENANT, lower, upper,
        )  # fmt: skip
        started = time.monotonic()
        restored, _ = await restore.restore(conn, where, TENANT, month)
        restore_s = time.monotonic() - started - verify_s  # restore verifies first: not counted
    return verify_s, max(restore_s, 1e-6), restored


# --- the child: one export, its seconds and peak RSS ---------------------------------------------


async def _child(dsn: str, url: str, month: date, fmt: Format) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        started = time.monotonic()
        where, limits = storage.open_url(url), export.Limits(format=fmt)
        result = await export.export_month(conn, where, TENANT, month, limits)
        seconds = time.monotonic() - started
    finally:
        await conn.close()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": round(seconds, 3), "rows": result.rows, "files": result.files,
            "compressed_size": result.compressed_size, "peak_rss_mb": round(peak_kb / 1024, 1)}  # fmt: skip


if __name__ == "__main__":
    chosen = formats.of_name(sys.argv[4])
    found = asyncio.run(_child(sys.argv[1], sys.argv[2], date.fromisoformat(sys.argv[3]), chosen))
    print(json.dumps({"bench": found}), flush=True)

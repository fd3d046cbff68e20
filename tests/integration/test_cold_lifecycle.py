"""The cold tier in a month's life: retention's `--then export` deletes only what a verified
export covers (exporting first, and again when late rows arrive), and the monthly `cold` job
exports the months past each `export` policy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from consumer import jobs, model, partitions, periodic, policies, retention, store
from consumer.cold import query, records, storage
from ops import seed
from tests.conftest import MakeSettings

SHAPE = seed.Shape(tenants=("acme", "globex"), months=4, rows=800, per_conversation=8)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    created = await asyncpg.create_pool(database_url, min_size=1, max_size=3)
    yield created
    await created.close()


async def run_job(
    pool: asyncpg.Pool, make_settings: MakeSettings, name: str, **s: str
) -> jobs.Counts:
    settings = make_settings(**s)
    outcome = await jobs.Runner(pool, settings).run(periodic.named(settings, name))
    assert outcome is not None and outcome.status == "ok", outcome
    return outcome.counts


async def rows_by_month(db: asyncpg.Connection, tenant: str) -> dict[str, int]:
    found = await db.fetch(
        "SELECT to_char(\"timestamp\" AT TIME ZONE 'UTC', 'YYYY-MM') AS month, count(*) AS n"
        " FROM conversation_history WHERE tenant_id = $1 GROUP BY 1", tenant,
    )  # fmt: skip
    return {r["month"]: r["n"] for r in found}


def cold_count(url: str, tenant: str) -> dict[str, int]:
    con = query.connect(storage.open_url(url))
    try:
        found = con.execute(
            "SELECT month, count(*) FROM conversation_history WHERE tenant_id = ? GROUP BY 1",
            [tenant],
        ).fetchall()
    finally:
        con.close()
    return {month: n for month, n in found}


async def test_export_policy_deletes_only_verified_covered_months_and_late_rows_export_again(
    db: asyncpg.Connection, pool: asyncpg.Pool, make_settings: MakeSettings, tmp_path: Path
) -> None:
    url = f"file://{tmp_path}/cold"
    now: datetime = await db.fetchval("SELECT now()")
    await seed.load(db, SHAPE, now)
    await policies.put(db, policies.Policy(None, timedelta(days=45), "export"))
    before = await rows_by_month(db, "acme")
    # a dry run exports nothing and keeps every month (no verified copy yet)
    s = make_settings(cold_url=url)
    conn = await pool.acquire()
    try:
        preview = await retention.preview(
            conn, "plain", periodic.export_gate(s, export_first=False)
        )
    finally:
        await pool.release(conn)
    assert preview["rows_dropped"] == preview["rows_deleted"] == 0
    assert not await db.fetchval("SELECT count(*) FROM archived_partitions")

    counts = await run_job(pool, make_settings, "retention", cold_url=url)
    assert counts["rows_dropped"] + counts["rows_deleted"] > 0
    gone = {m: n for m, n in before.items() if m not in await rows_by_month(db, "acme")}
    assert gone and cold_count(url, "acme") == gone
    listed = await records.listing(db, "acme")
    assert {r["month"].strftime("%Y-%m") for r in listed} == set(gone)
    assert all(r["verified_at"] is not None for r in listed)

    # a late checkpoint brings a row back into an exported, deleted month
    month = min(gone)
    late = datetime.fromisoformat(f"{month}-02T00:00:00+00:00")
    await db.execute("SELECT archiver_ensure_partition($1)", late)
    await db.execute(
        "INSERT INTO conversation_history (tenant_id, conversation_id, \"timestamp\","
        " message_role, message_content, message_key, source_key)"
        " VALUES ('acme', 'late-conv', $1, 'user', 'late', 'late-1', 'late-src')", late,
    )  # fmt: skip
    await run_job(pool, make_settings, "retention", cold_url=url)
    assert month not in await rows_by_month(db, "acme")
    assert cold_count(url, "acme")[month] == gone[month] + 1
    current = await records.current(db, "acme", late.date().replace(day=1))
    assert current is not None and current["version"] == 2 and current["verified_at"] is not None


@pytest.mark.parametrize(
    "fmt", [("parquet", "zstd"), ("jsonl", "zstd"), ("jsonl", "gzip")], ids="/".join
)
async def test_the_cold_job_exports_months_past_export_policies_only(
    db: asyncpg.Connection, pool: asyncpg.Pool, make_settings: MakeSettings, tmp_path: Path,
    fmt: tuple[str, str],
) -> None:  # fmt: skip
    """In the format ARCHIVER_COLD_FORMAT and ARCHIVER_COLD_COMPRESSION name."""
    url = f"file://{tmp_path}/cold"
    now: datetime = await db.fetchval("SELECT now()")
    await seed.load(db, SHAPE, now)
    await policies.put(db, policies.Policy("acme", timedelta(days=45), "export"))
    await policies.put(db, policies.Policy("globex", timedelta(days=45), "delete"))
    listed = {j.name: j.schedule for j in periodic.registered(make_settings(cold_url=url))}
    assert listed["cold"] == "0 3 1 * *"
    assert periodic.named(make_settings(), "cold").schedule == "off"  # no cold tier, no runs
    chosen = {"cold_format": fmt[0], "cold_compression": fmt[1]}
    counts = await run_job(pool, make_settings, "cold", cold_url=url, **chosen)
    assert counts["exported"] > 0 and counts["failed_verify"] == 0
    exported = await records.listing(db, "acme")
    assert {(r["format"], r["compression"]) for r in exported} == {fmt}
    assert sum(cold_count(url, "acme").values()) == sum(r["row_count"] for r in exported)
    assert {i["tenant"] for i in counts["items"]} == {"acme"}
    cutoff = now - timedelta(days=45)
    for item in counts["items"]:
        end = datetime.fromisoformat(f"{item['month']}-01T00:00:00+00:00") + timedelta(days=31)
        assert end.replace(day=1) <= cutoff.astimezone(UTC)
    again = await run_job(pool, make_settings, "cold", cold_url=url, **chosen)
    assert again["exported"] == 0 and again["unchanged"] == counts["exported"]


# --- a row archived into a month while retention releases it -------------------------------------


async def archive(database_url: str, checkpoint: model.Checkpoint) -> None:
    """Through the archive path (its own pool, as `archiver run` has)."""
    writer = await store.connect(database_url, command_timeout=30)
    try:
        await store.Store(writer).write([checkpoint], [])
    finally:
        await writer.close()


def late_checkpoint(moment: datetime, n: int) -> model.Checkpoint:
    message = model.Message(f"late-{n}", "user", "late", moment, {})
    return model.Checkpoint(f"late-src-{n}", f"late-conv-{n}", "acme", None, None, (message,))


def kept_reasons(counts: jobs.Counts, month: str) -> list[str]:
    """Why a run kept a month's rows (one reason per tenant kept)."""
    return [i["reason"] for i in counts["items"] if i["action"] == "keep" and i["month"] == month]


async def late_row_kept(db: asyncpg.Connection, n: int) -> bool:
    found = "SELECT count(*) FROM conversation_history WHERE message_key = $1"
    return bool(await db.fetchval(found, f"late-{n}"))


async def exported_acme(db: asyncpg.Connection, url: str, make_settings: MakeSettings,
                        pool: asyncpg.Pool) -> list[str]:  # fmt: skip
    """acme `export` (globex has no policy: acme's months go by batched deletes); acme's past
    months exported and verified by the cold job. Returns them."""
    now: datetime = await db.fetchval("SELECT now()")
    await seed.load(db, SHAPE, now)
    await policies.put(db, policies.Policy("acme", timedelta(days=45), "export"))
    exported = await run_job(pool, make_settings, "cold", cold_url=url)
    months = sorted({i["month"] for i in exported["items"]})
    assert months and exported["failed_verify"] == 0
    return months


async def test_a_row_archived_after_the_plan_keeps_its_month(
    db: asyncpg.Connection, pool: asyncpg.Pool, make_settings: MakeSettings, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, database_url: str,
) -> None:  # fmt: skip
    url = f"file://{tmp_path}/cold"
    months = await exported_acme(db, url, make_settings, pool)
    late = datetime.fromisoformat(f"{months[0]}-03T00:00:00+00:00")
    real_plan = retention.plan

    async def plan_then_late_row(*args: Any) -> retention.Plan:
        found = await real_plan(*args)  # the gate saw every month covered
        await archive(database_url, late_checkpoint(late, 1))
        return found

    monkeypatch.setattr(retention, "plan", plan_then_late_row)
    counts = await run_job(pool, make_settings, "retention", cold_url=url)
    left = await rows_by_month(db, "acme")
    assert months[0] in left  # the late row and its month's rows stay: no copy covers them
    assert all(m not in left for m in months[1:])  # the others went
    reasons = kept_reasons(counts, months[0])
    assert reasons and "rows changed since its cold copy" in reasons[0]
    assert await late_row_kept(db, 1)


async def test_a_row_archived_during_the_deletes_stops_them(
    db: asyncpg.Connection, pool: asyncpg.Pool, make_settings: MakeSettings, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, database_url: str,
) -> None:  # fmt: skip
    url = f"file://{tmp_path}/cold"
    months = await exported_acme(db, url, make_settings, pool)
    before = await rows_by_month(db, "acme")
    late = datetime.fromisoformat(f"{months[0]}-28T00:00:00+00:00")  # after the first batches
    real_paced = retention._Run._paced
    written: list[int] = []

    async def paced_then_late_row(self: Any, started: float) -> None:
        if not written:  # after the first batch of the first released month
            written.append(1)
            await archive(database_url, late_checkpoint(late, 2))
        await real_paced(self, started)

    monkeypatch.setattr(retention._Run, "_paced", paced_then_late_row)
    counts = await run_job(pool, make_settings, "retention", cold_url=url, retention_batch="5")
    assert written
    assert await late_row_kept(db, 2)
    assert kept_reasons(counts, months[0]) == [retention.LATE]
    assert not await db.fetchval("SELECT count(*) FROM retention_releases")
    # the next run exports the month again (the late row with it) before deleting it
    await run_job(pool, make_settings, "retention", cold_url=url)
    assert months[0] not in await rows_by_month(db, "acme")
    assert cold_count(url, "acme")[months[0]] == before[months[0]] + 1


async def test_a_row_archived_before_a_drop_keeps_the_partition(
    db: asyncpg.Connection, pool: asyncpg.Pool, make_settings: MakeSettings, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, database_url: str,
) -> None:  # fmt: skip
    url = f"file://{tmp_path}/cold"
    months = await exported_acme(db, url, make_settings, pool)
    await policies.put(db, policies.Policy("globex", timedelta(days=45), "delete"))
    late = datetime.fromisoformat(f"{months[0]}-03T00:00:00+00:00")
    real_drop = partitions.Dropper.drop

    async def late_row_then_drop(self: Any, month: Any, allowed: Any) -> str:
        if month.month.strftime("%Y-%m") == months[0]:  # released and confirmed by now
            await archive(database_url, late_checkpoint(late, 3))
        return await real_drop(self, month, allowed)

    monkeypatch.setattr(partitions.Dropper, "drop", late_row_then_drop)
    counts = await run_job(pool, make_settings, "retention", cold_url=url)
    assert counts["partitions_postponed"] == ["conversation_history_" + months[0].replace("-", "_")]
    assert await late_row_kept(db, 3)
    assert "globex" not in {i["tenant"] for i in counts["items"] if i["action"] == "keep"}

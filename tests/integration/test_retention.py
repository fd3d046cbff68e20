"""Retention against a real PostgreSQL: policies per tenant, whole-partition drops (both ways
of detaching), batched deletes, the conversations rows, dry runs, interrupted runs, and rows
the archiver is inserting meanwhile."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest

from consumer import (
    health,
    jobs,
    model,
    partitions,
    periodic,
    policies,
    retention,
    service,
    settings,
)
from ops import seed
from tests import servers
from tests.conftest import MakeSettings

TENANTS = ("acme", "globex", "initech")
SHAPE = seed.Shape(tenants=TENANTS, months=8, rows=4_800, per_conversation=10)
DAY = timedelta(days=1)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """The archiver's connections: its least-privilege login role (archiver_writer)."""
    created = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    yield created
    await created.close()


@pytest.fixture
def owner_url(pg_server: servers.PostgresServer, admin_database_url: str) -> str:
    """The same database as the migration owner (ARCHIVER_OWNER_DATABASE_URL)."""
    return pg_server.dsn(admin_database_url.rsplit("/", 1)[1], user=servers.PG_OWNER)


async def now(db: asyncpg.Connection) -> datetime:
    moment: datetime = await db.fetchval("SELECT now()")
    return moment


async def seeded(db: asyncpg.Connection, shape: seed.Shape = SHAPE) -> seed.Loaded:
    return await seed.load(db, shape, await now(db))


async def set_policy(
    db: asyncpg.Connection, tenant: str | None, days: int, then: str = "delete"
) -> None:
    await policies.put(db, policies.Policy(tenant, timedelta(days=days), then))


async def run_retention(pool: asyncpg.Pool, s: settings.Settings) -> jobs.Outcome:
    outcome = await jobs.Runner(pool, s).run(periodic.named(s, "retention"))
    assert outcome is not None
    assert outcome.status == "ok", outcome.error
    return outcome


async def oldest(db: asyncpg.Connection) -> dict[str, datetime]:
    rows = await db.fetch(
        'SELECT tenant_id, min("timestamp") AS first FROM conversation_history GROUP BY 1'
    )
    return {r["tenant_id"]: r["first"] for r in rows}


async def counts(db: asyncpg.Connection) -> dict[str, int]:
    rows = await db.fetch("SELECT tenant_id, count(*) AS n FROM conversation_history GROUP BY 1")
    return {r["tenant_id"]: r["n"] for r in rows}


async def partition_names(db: asyncpg.Connection) -> list[str]:
    return [p.name for p in await partitions.listing(db) if p.state == "attached"]


async def conversations_consistent(db: asyncpg.Connection) -> None:
    """Every conversations row has rows left and starts at its first one; every conversation
    with rows has its row."""
    broken = await db.fetch(
        """
        SELECT c.tenant_id, c.conversation_id, c.started_at, h.first
        FROM conversations c
        FULL JOIN (SELECT tenant_id, conversation_id, min("timestamp") AS first
                   FROM conversation_history GROUP BY 1, 2) h USING (tenant_id, conversation_id)
        WHERE h.first IS NULL OR c.started_at IS DISTINCT FROM h.first
        """
    )
    assert [dict(r) for r in broken[:5]] == [], f"{len(broken)} inconsistent conversations"


def expected_left(loaded: seed.Loaded, cutoffs: dict[str, datetime | None]) -> dict[str, int]:
    """Rows per tenant that must survive (seeded rows: timestamps known by month only, so
    this is checked per tenant against the rows younger than the cutoff in the database)."""
    return {t: n for (t, _), n in loaded.rows.items() if cutoffs.get(t) is None}


# --- policies ------------------------------------------------------------------------------------


async def test_without_any_policy_nothing_is_deleted(
    db: asyncpg.Connection, pool: asyncpg.Pool, make_settings: MakeSettings
) -> None:
    loaded = await seeded(db)
    before = await partition_names(db)
    outcome = await run_retention(pool, make_settings())
    assert sum((await counts(db)).values()) == loaded.total
    assert await partition_names(db) == before
    assert outcome.counts["rows_deleted"] == outcome.counts["rows_dropped"] == 0
    assert outcome.counts["items"] == []


async def test_policies_are_set_replaced_listed_and_removed(db: asyncpg.Connection) -> None:
    await set_policy(db, None, 90)
    await set_policy(db, "acme", 7)
    await set_policy(db, "acme", 30, "export")
    found = await policies.load(db)
    assert found.default is not None and found.default.keep == timedelta(days=90)
    assert found.for_tenant("acme") == policies.Policy(
        "acme", timedelta(days=30), "export", found.tenants["acme"].updated_at
    )
    assert found.for_tenant("other") == found.default
    assert [p.as_item()["keep"] for p in found.all()] == ["90d", "30d"]
    removed = await policies.remove(db, "acme")
    assert removed is not None and removed.tenant == "acme"
    assert await policies.remove(db, "acme") is None
    assert (await policies.load(db)).for_tenant("acme") == found.default


# --- what a run deletes --------------------------------------------------------------------------


async def test_each_tenant_keeps_exactly_its_period_and_whole_months_are_dropped(
    db: asyncpg.Connection, pool: asyncpg.Pool, make_settings: MakeSettings
) -> None:
    loaded = await seeded(db)
    await set_policy(db, None, 120)  # globex, initech
    await set_policy(db, "acme", 40)
    before = await db.fetch('SELECT tenant_id, message_key, "timestamp" FROM conversation_history')
    outcome = await run_retention(pool, make_settings())
    started = datetime.fromisoformat(str(outcome.counts["started_at"]))
    cutoffs = {"acme": started - 40 * DAY, "globex": started - 120 * DAY,
               "initech": started - 120 * DAY}  # fmt: skip
    survivors = {(r["tenant_id"], r["message_key"]) for r in before
                 if r["timestamp"] >= cutoffs[r["tenant_id"]]}  # fmt: skip
    after = await db.fetch("SELECT tenant_id, message_key FROM conversation_history")
    assert {(r["tenant_id"], r["message_key"]) for r in after} == survivors
    assert len(after) == len(survivors) < loaded.total
    # months wholly older than every cutoff went as partitions, the rest by batches
    first_kept = partitions.month_start(cutoffs["globex"])
    names = await partition_names(db)
    assert all(p.lower >= first_kept for p in await partitions.listing(db) if p.name in names)
    assert outcome.counts["partitions_dropped"]
    assert outcome.counts["rows_dropped"] > 0 and outcome.counts["rows_deleted"] > 0
    assert outcome.counts["rows_dropped"] + outcome.counts["rows_deleted"] == len(before) - len(
        after
    )
    await conversations_consistent(db)
    assert outcome.counts["conversations_removed"] > 0


async def test_conversations_cut_by_the_cutoff_start_at_their_first_row_left(
    db: asyncpg.Connection, pool: asyncpg.Pool, make_settings: MakeSettings
) -> None:
    """A cutoff within the first hour of a month: the conversations crossing into it keep
    their later messages, and their rows start there now."""
    await seeded(db)
    boundary = partitions.add_months(partitions.month_start(await now(db)), -3)
    hours = int((await now(db) - boundary) / timedelta(hours=1))
    await policies.put(db, policies.Policy(None, timedelta(hours=hours), "delete"))
    crossing = await db.fetch(
        "SELECT conversation_id FROM conversations WHERE started_at < $1 AND ended_at > $1",
        boundary,
    )
    assert len(crossing) == len(TENANTS)
    outcome = await run_retention(pool, make_settings())
    assert outcome.counts["conversations_updated"] == len(TENANTS)
    started = await db.fetch(
        "SELECT started_at FROM conversations WHERE conversation_id = ANY($1)",
        [r["conversation_id"] for r in crossing],
    )
    assert all(boundary < r["started_at"] <= boundary + 5 * timedelta(hours=1) for r in started)
    await conversations_consistent(db)


async def test_the_current_and_next_months_are_never_dropped(
    db: asyncpg.Connection, pool: asyncpg.Pool, make_settings: MakeSettings
) -> None:
    await seeded(db, seed.Shape(tenants=("acme",), months=2, rows=400))
    s = make_settings()
    maintained = await jobs.Runner(pool, s).run(periodic.named(s, "partitions"))
    assert maintained is not None and maintained.status == "ok"
    await set_policy(db, None, 1)
    await run_retention(pool, s)
    this_month = partitions.month_start(await now(db))
    names = await partition_names(db)
    months = [p.lower for p in await partitions.listing(db)]
    assert this_month in months and partitions.add_months(this_month, 1) in months, names
    assert min(months) == this_month
    moment = await now(db)
    assert all(first >= moment - 2 * DAY for first in (await oldest(db)).values())
    with pytest.raises(asyncpg.InvalidParameterValueError, match="not wholly in the past"):
        await db.fetchval("SELECT archiver_drop_partition($1, NULL, 100)", names[0])


async def test_a_tenant_without_a_policy_keeps_its_rows_and_its_months(
    db: asyncpg.Connection, pool: asyncpg.Pool, make_settings: MakeSettings
) -> None:
    loaded = await seeded(db)
    await set_policy(db, "acme", 30)
    await set_policy(db, "globex", 30)
    before_parts = await partition_names(db)
    outcome = await run_retention(pool, make_settings())
    assert await partition_names(db) == before_parts  # initech holds every month
    left = await counts(db)
    assert left["initech"] == sum(n for (t, _), n in loaded.rows.items() if t == "initech")
    assert left["acme"] < sum(n for (t, _), n in loaded.rows.items() if t == "acme")
    assert outcome.counts["unmanaged_tenants"] == ["initech"]
    assert outcome.counts["rows_dropped"] == 0
    await conversations_consistent(db)


async def test_export_keeps_everything_until_the_cold_tier_exists(
    db: asyncpg.Connection, pool: asyncpg.Pool, make_settings: MakeSettings
) -> None:
    loaded = await seeded(db)
    await set_policy(db, None, 30, "export")
    await set_policy(db, "acme", 30)
    outcome = await run_retention(pool, make_settings())
    left = await counts(db)
    for tenant in ("globex", "initech"):
        assert left[tenant] == sum(n for (t, _), n in loaded.rows.items() if t == tenant)
    kept = [i for i in outcome.counts["items"] if i["action"] == "keep"]
    assert {i["tenant"] for i in kept} == {"globex", "initech"}
    assert all(i["reason"] for i in kept)
    assert outcome.counts["rows_kept_for_export"] == sum(i["rows"] for i in kept) > 0
    assert outcome.counts["rows_dropped"] == 0 and outcome.counts["rows_deleted"] > 0


class VerifiedEverything:
    """A stand-in cold tier that has verified every month (for the gate's contract)."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str, int]] = []

    async def releasable(self, conn: Any, tenant: str, month: Any, rows: int) -> str | None:
        self.asked.append((tenant, month.strftime("%Y-%m"), rows))
        return None


async def test_export_keeps_what_the_database_cannot_confirm_whatever_the_gate_says(
    db: asyncpg.Connection, pool: asyncpg.Pool, make_settings: MakeSettings
) -> None:
    """A gate that says every month is covered, with no cold copy behind it: PostgreSQL's
    release (sql/0012) refuses, so nothing goes (test_cold_lifecycle has the real gate)."""
    loaded = await seeded(db)
    await set_policy(db, None, 60, "export")
    gate = VerifiedEverything()
    s = make_settings()
    job = jobs.Job("retention", "off", lambda ctx: retention.apply(ctx, gate), "test")
    outcome = await jobs.Runner(pool, s).run(job)
    assert outcome is not None and outcome.status == "ok", outcome
    assert gate.asked and all(rows > 0 for _, _, rows in gate.asked)
    assert outcome.counts["rows_dropped"] == outcome.counts["rows_deleted"] == 0
    assert sum((await counts(db)).values()) == loaded.total
    kept = [i for i in outcome.counts["items"] if i["action"] == "keep"]
    assert {i["reason"] for i in kept} == {
        "export: no verified cold copy",  # months wholly past the keep period
        "export: waits until the whole month is past its keep period",
    }
    assert not await db.fetchval("SELECT count(*) FROM retention_releases")  # all closed
    with pytest.raises(asyncpg.InvalidParameterValueError, match="through a release"):
        await db.fetch(
            "SELECT * FROM archiver_retention_delete('acme', '-infinity', 'infinity', 10)"
        )


# --- dry run -------------------------------------------------------------------------------------


async def test_a_dry_run_reports_what_a_run_then_deletes(
    db: asyncpg.Connection, pool: asyncpg.Pool, make_settings: MakeSettings
) -> None:
    loaded = await seeded(db)
    await set_policy(db, None, 100)
    await set_policy(db, "acme", 35)
    preview = await retention.preview(db, "locked")
    assert sum((await counts(db)).values()) == loaded.total  # nothing deleted
    outcome = await run_retention(pool, make_settings())

    def lines(c: dict[str, Any]) -> list[tuple[str, str, int, int, str]]:
        return sorted((i["tenant"], i["month"], i["rows"], i["conversations"], i["action"])
                      for i in c["items"])  # fmt: skip

    # the cutoff moves by the seconds between the two: compare whole months
    assert [x for x in lines(preview) if x[4] == "drop partition"] == [
        x for x in lines(outcome.counts) if x[4] == "drop partition"
    ]
    assert preview["partitions_dropped"] == outcome.counts["partitions_dropped"]
    assert abs(sum(x[2] for x in lines(preview)) - sum(x[2] for x in lines(outcome.counts))) <= 10


# --- dropping partitions: both ways --------------------------------------------------------------


async def test_partitions_are_detached_concurrently_with_an_owner_connection(
    db: asyncpg.Connection, pool: asyncpg.Pool, make_settings: MakeSettings, owner_url: str
) -> None:
    await seeded(db)
    await set_policy(db, None, 100)
    s = make_settings(owner_database_url=owner_url)
    outcome = await run_retention(pool, s)
    assert outcome.counts["drop_method"] == "concurrently"
    assert outcome.counts["partitions_dropped"]
    assert not set(outcome.counts["partitions_dropped"]) & set(await partition_names(db))
    assert [p for p in await partitions.listing(db) if p.state != "attached"] == []


async def test_a_plain_detach_gives_up_on_a_busy_table_and_deletes_in_batches(
    db: asyncpg.Connection, pool: asyncpg.Pool, make_settings: MakeSettings, database_url: str
) -> None:
    """An archive batch that holds conversation_history longer than the lock timeout each
    time: the detach never waits longer than that, and the month is deleted in batches."""
    await seeded(db)
    await set_policy(db, None, 100)
    blocker = await asyncpg.connect(database_url)
    try:
        async with blocker.transaction():
            await blocker.execute("SELECT count(*) FROM conversation_history")
            s = make_settings(detach_lock_timeout="50ms", detach_attempts=2)
            outcome = await run_retention(pool, s)
    finally:
        await blocker.close()
    assert outcome.counts["partitions_dropped"] == []
    postponed = outcome.counts["partitions_postponed"]
    assert postponed
    cutoff = datetime.fromisoformat(str(outcome.counts["started_at"])) - 100 * DAY
    assert min((await oldest(db)).values()) >= cutoff
    await conversations_consistent(db)
    # the next run, with the table free, drops the now empty months
    again = await run_retention(pool, make_settings())
    assert set(postponed) <= set(again.counts["partitions_dropped"])


async def detach_interrupted(database_url: str, name: str) -> None:
    """DETACH ... CONCURRENTLY cancelled while an older snapshot is open: "detach pending"."""
    holder = await asyncpg.connect(database_url)
    detacher = await asyncpg.connect(database_url)
    try:
        async with holder.transaction(isolation="repeatable_read"):
            await holder.execute("SELECT count(*) FROM conversation_history")
            await detacher.execute("SET statement_timeout = '500ms'")
            with pytest.raises(asyncpg.QueryCanceledError):
                await detacher.execute(
                    f"ALTER TABLE conversation_history DETACH PARTITION {name} CONCURRENTLY"
                )
    finally:
        await holder.close()
        await detacher.close()


@pytest.mark.parametrize("lets_it_go", [True, False])
async def test_an_interrupted_concurrent_detach_is_finished_by_the_next_run(
    db: asyncpg.Connection,
    pool: asyncpg.Pool,
    make_settings: MakeSettings,
    owner_url: str,
    lets_it_go: bool,
) -> None:
    """Dropped if every tenant in it lets the month go now; attached again otherwise."""
    loaded = await seeded(db)
    first = (await partitions.listing(db))[0]
    await detach_interrupted(owner_url, first.name)
    assert {p.name: p.state for p in await partitions.listing(db)}[first.name] == "detach pending"
    await set_policy(db, None, 60 if lets_it_go else 3650)
    outcome = await run_retention(pool, make_settings())
    states = {p.name: p.state for p in await partitions.listing(db)}
    if lets_it_go:
        assert outcome.counts["leftovers_dropped"] == [first.name]
        assert first.name not in states
    else:
        assert outcome.counts["leftovers_dropped"] == []
        assert states[first.name] == "attached"
        assert sum((await counts(db)).values()) == loaded.total
    await conversations_consistent(db)


@pytest.mark.parametrize("owner", [False, True])
async def test_a_month_holding_a_tenant_not_planned_for_is_kept(
    db: asyncpg.Connection,
    pool: asyncpg.Pool,
    make_settings: MakeSettings,
    owner_url: str,
    owner: bool,
) -> None:
    """Rows of a tenant the plan did not allow arrived in the month: nothing is dropped (a
    concurrently detached partition is attached again)."""
    loaded = await seeded(db)
    await set_policy(db, None, 60)
    first = (await partitions.listing(db))[0]
    s = make_settings(owner_database_url=owner_url if owner else None)
    result = await partitions.Dropper(pool, s).drop(first, ["acme", "globex"])
    assert result == "kept"
    assert {p.name: p.state for p in await partitions.listing(db)}[first.name] == "attached"
    assert sum((await counts(db)).values()) == loaded.total
    assert await partitions.Dropper(pool, s).drop(first, list(TENANTS)) == "dropped"


# --- concurrency and interruptions ---------------------------------------------------------------


async def test_a_row_the_archiver_is_inserting_is_never_deleted(
    db: asyncpg.Connection, pool: asyncpg.Pool, make_settings: MakeSettings, database_url: str
) -> None:
    """An old message arriving in an archive transaction still open while retention runs:
    invisible to the run, it is not deleted (the next run will, once committed)."""
    await seeded(db)
    await set_policy(db, None, 60)
    moment = await now(db) - 50 * DAY - timedelta(hours=5)  # in a month being batch-deleted
    archiver = await asyncpg.connect(database_url)
    try:
        transaction = archiver.transaction()
        await transaction.start()
        await archiver.execute(
            """INSERT INTO conversation_history (tenant_id, conversation_id, "timestamp",
               message_role, message_content, message_key, source_key)
               VALUES ('acme', 'late', $1, 'user', 'x', 'h:late', 'k')""",
            moment - 20 * DAY,
        )
        # its month cannot be detached meanwhile: one short try, then batches
        await run_retention(pool, make_settings(detach_attempts=1))
        await transaction.commit()
    finally:
        await archiver.close()
    assert (
        await db.fetchval(
            "SELECT count(*) FROM conversation_history WHERE conversation_id = 'late'"
        )
        == 1
    )


async def test_a_run_interrupted_at_any_point_is_completed_by_the_next(
    db: asyncpg.Connection, pool: asyncpg.Pool, make_settings: MakeSettings
) -> None:
    """Cancel the job after each of its first batches (its lease is then left to run out, as
    after a kill -9): the next run completes, and the result equals a clean run's."""
    await seeded(db)
    await set_policy(db, None, 150)
    await set_policy(db, "acme", 45)
    s = make_settings(retention_batch=100, job_lease="3s")
    job = periodic.named(s, "retention")
    for stop_after in (0.05, 0.3, 0.6):
        runner = jobs.Runner(pool, s)
        task = asyncio.create_task(runner.run(job))
        await asyncio.sleep(stop_after)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    outcome = await run_retention(pool, s)
    started = datetime.fromisoformat(str(outcome.counts["started_at"]))
    first = await oldest(db)
    assert first["acme"] >= started - 45 * DAY
    assert first["globex"] >= started - 150 * DAY
    await conversations_consistent(db)
    assert await db.fetchval("SELECT count(*) FROM retention_touched") == 0
    assert await db.fetchval("SELECT count(*) FROM retention_dropped") == 0
    statuses = [r["status"] for r in await db.fetch("SELECT status FROM job_runs ORDER BY id")]
    assert statuses[-1] == "ok" and "interrupted" in statuses


# --- least privilege -----------------------------------------------------------------------------


async def test_the_writer_reads_policies_but_may_not_change_them(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        assert (await policies.load(conn)).all() == []
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await policies.put(conn, policies.Policy(None, timedelta(days=1), "delete"))
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM conversation_history")
    finally:
        await conn.close()


async def test_the_writer_can_delete_only_what_a_policy_lets_go(
    db: asyncpg.Connection, database_url: str
) -> None:
    """Even asking the functions directly for everything, the writer's role removes only
    rows older than their tenant's keep period, and no month a tenant still keeps."""
    loaded = await seeded(db)
    await set_policy(db, "acme", 60)
    conn = await asyncpg.connect(database_url)
    try:
        everything = ("-infinity", "infinity", 10_000_000)
        row = await conn.fetchrow(
            "SELECT * FROM archiver_retention_delete('acme', $1::text::timestamptz,"
            " $2::text::timestamptz, $3)", *everything,
        )  # fmt: skip
        assert row is not None and row["deleted"] > 0
        with pytest.raises(asyncpg.InvalidParameterValueError, match="no retention policy"):
            await conn.fetchrow(
                "SELECT * FROM archiver_retention_delete('globex', $1::text::timestamptz,"
                " $2::text::timestamptz, $3)", *everything,
            )  # fmt: skip
        first = (await partitions.listing(conn))[0]
        kept = await conn.fetchval(
            "SELECT archiver_drop_partition($1, $2, 100)", first.name, list(TENANTS)
        )
        assert kept == "kept"
    finally:
        await conn.close()
    moment = await now(db)
    assert (await oldest(db))["acme"] >= moment - 60 * DAY - timedelta(minutes=1)
    left = await counts(db)
    for tenant in ("globex", "initech"):
        assert left[tenant] == sum(n for (t, _), n in loaded.rows.items() if t == tenant)


async def test_retention_functions_run_as_the_owner_with_a_fixed_search_path(
    db: asyncpg.Connection,
) -> None:
    rows = await db.fetch(
        "SELECT proname, prosecdef, proconfig, pg_get_userbyid(proowner) AS owner,"
        " has_function_privilege('public', oid, 'EXECUTE') AS public,"
        " has_function_privilege('archiver_writer', oid, 'EXECUTE') AS writer"
        " FROM pg_proc WHERE proname LIKE 'archiver_retention_%' OR proname = 'archiver_drop_partition'"
    )
    found = {r["proname"]: r for r in rows}
    helpers = {"archiver_retention_cutoff", "archiver_retention_exports",
               "archiver_retention_released"}  # fmt: skip
    internal = {"archiver_retention_delete_span"}  # only through the two deletes below
    assert set(found) == helpers | internal | {
        "archiver_retention_delete", "archiver_retention_delete_released",
        "archiver_retention_settle", "archiver_drop_partition"}  # fmt: skip
    for name, r in found.items():
        assert r["owner"] == servers.PG_OWNER, name
        assert r["proconfig"] == ["search_path=pg_catalog, public, pg_temp"], name
        assert r["public"] is False, name
        assert r["prosecdef"] == (name not in helpers), name
        assert r["writer"] == (name not in helpers | internal), name


# --- the archive path and expired messages -------------------------------------------------------


def checkpoint(tenant: str, conversation: str, *stamps: datetime) -> model.Checkpoint:
    messages = tuple(
        model.Message(f"id:{conversation}-{i}", "user", f"message {i}", stamp, {})
        for i, stamp in enumerate(stamps)
    )
    key = f"langgraph:checkpoint:{conversation}:1"
    return model.Checkpoint(key, conversation, tenant, None, None, messages)


@pytest.mark.parametrize("then", ["delete", "export"])
async def test_the_archiver_does_not_bring_back_messages_a_delete_policy_let_go(
    db: asyncpg.Connection,
    pool: asyncpg.Pool,
    parts: service.Parts,
    make_settings: MakeSettings,
    then: str,
) -> None:
    """A checkpoint carries a conversation's whole history: after retention, its old
    messages would come back with every checkpoint. Under a `delete` policy they are not
    archived again (an `export` policy keeps them for the cold tier), and the next run
    settles the conversation's row."""
    await set_policy(db, "acme", 30, then)
    moment = await now(db)
    old, recent = moment - 40 * DAY, moment - 2 * DAY
    written = await parts.store.write([checkpoint("acme", "long", old, recent)], [])
    assert written == {"langgraph:checkpoint:long:1": 1 if then == "delete" else 2}
    other = await parts.store.write([checkpoint("globex", "other", old)], [])
    assert other == {"langgraph:checkpoint:other:1": 1}  # no policy: archived
    if then == "export":
        return
    stamps = await db.fetch(
        "SELECT \"timestamp\" FROM conversation_history WHERE tenant_id = 'acme'"
    )
    assert [r["timestamp"] for r in stamps] == [recent]
    await run_retention(pool, make_settings())
    await conversations_consistent(db)


async def test_the_scheduled_job_applies_the_policies(
    db: asyncpg.Connection, pool: asyncpg.Pool, make_settings: MakeSettings
) -> None:
    """As `archiver run` does: its slot is due (never run), the scheduler runs it."""
    await seeded(db)
    await set_policy(db, None, 45)
    s = make_settings()
    job = periodic.named(s, "retention")
    state = health.State(sweep_interval=60)
    await jobs.Scheduler(jobs.Runner(pool, s), periodic.registered(s), state).tick(job)
    (run,) = await db.fetch("SELECT trigger, status, slot FROM job_runs")
    assert (run["trigger"], run["status"]) == ("schedule", "ok") and run["slot"] is not None
    assert min((await oldest(db)).values()) >= await now(db) - 46 * DAY
    assert state.jobs["retention"].status is None  # published before the run; next look: ok

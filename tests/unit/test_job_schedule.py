"""When a periodic job is due, by PostgreSQL's clock and the lease row (no servers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from consumer import health, jobs

NOW = datetime(2026, 3, 10, 14, 30, tzinfo=UTC)
TODAY_2AM = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)


async def nothing(ctx: jobs.Context) -> jobs.Counts:
    return {}


def view(schedule: str = "0 2 * * *", now: datetime = NOW, **row: Any) -> jobs.View:
    base = {"now": now, "held": False, "running_id": None, "last_slot": None, "holder": None,
            "expires_at": None, "finished_status": None, "finished_at": None,
            "finished_error": None, "last_success_at": None}  # fmt: skip
    return jobs.View(jobs.Job("j", schedule, nothing, "test"), base | row)


def test_a_job_never_run_is_due_for_its_latest_scheduled_time() -> None:
    assert view().due() == TODAY_2AM
    assert view().next_run() == TODAY_2AM


def test_a_slot_already_claimed_is_not_due_and_the_next_run_is_the_next_time() -> None:
    done = view(last_slot=TODAY_2AM)
    assert done.due() is None
    assert done.next_run() == TODAY_2AM + timedelta(days=1)


def test_a_slot_exactly_now_is_due() -> None:
    assert view(now=TODAY_2AM, last_slot=TODAY_2AM - timedelta(days=1)).due() == TODAY_2AM


def test_nothing_is_due_while_another_process_holds_the_lease() -> None:
    assert view(held=True, running_id=7).due() is None


def test_a_run_whose_holder_died_is_due_again_for_its_slot() -> None:
    crashed = view(held=False, running_id=7, last_slot=TODAY_2AM)
    assert crashed.interrupted
    assert crashed.due() == TODAY_2AM


def test_a_job_that_is_off_is_never_due() -> None:
    off = view(schedule="off")
    assert off.due() is None and off.next_run() is None
    assert not off.job.scheduled


@pytest.mark.parametrize("status", ["failed", "interrupted"])
def test_a_failed_latest_run_degrades_health(status: str) -> None:
    seen = view(finished_status=status, finished_error="boom", last_slot=TODAY_2AM).health()
    assert seen.failed and seen.error == "boom"
    state = health.State(sweep_interval=60, mode="events", subscribed=True, redis_ok=True,
                         database_ok=True, last_sweep_ok_at=NOW.timestamp())  # fmt: skip
    state.jobs["j"] = seen
    assert state.failed_jobs() == ["j"]
    assert state.snapshot()["jobs"]["j"]["status"] == status


def test_latest_and_next_slots_follow_the_cron_expression() -> None:
    assert jobs.latest_slot("*/15 * * * *", NOW) == NOW
    assert jobs.next_slot("*/15 * * * *", NOW) == NOW + timedelta(minutes=15)
    assert jobs.latest_slot("0 3 1 * *", NOW) == datetime(2026, 3, 1, 3, 0, tzinfo=UTC)

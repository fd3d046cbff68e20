from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from consumer import health
from consumer.health import State

INTERVAL = 3600.0


def healthy_state(**changes: Any) -> State:
    state = State(
        sweep_interval=INTERVAL,
        mode="events",
        subscribed=True,
        redis_ok=True,
        database_ok=True,
        last_sweep_ok_at=time.time(),
    )
    for name, value in changes.items():
        setattr(state, name, value)
    return state


# --- State ---------------------------------------------------------------------------------------


def test_all_good_is_healthy() -> None:
    state = healthy_state()
    assert state.problems() == []
    assert state.status() == "healthy"


@pytest.mark.parametrize("mode", ["degraded", "starting"])
def test_degraded_or_starting_mode_is_degraded(mode: str) -> None:
    state = healthy_state(mode=mode, subscribed=False)
    assert state.problems() == []
    assert state.status() == "degraded"


def test_recent_errors_degrade() -> None:
    assert healthy_state(recent_errors=3).status() == "degraded"


def test_sweep_only_mode_without_subscription_is_healthy() -> None:
    assert healthy_state(mode="sweep-only", subscribed=False).status() == "healthy"


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"last_sweep_ok_at": time.time() - 1.6 * INTERVAL}, "no successful sweep"),
        ({"subscribed": False}, "keyevent subscription is down"),
        ({"database_ok": False}, "PostgreSQL unreachable"),
        ({"redis_ok": False}, "Redis unreachable"),
    ],
)
def test_each_problem_makes_the_process_unhealthy(changes: dict[str, Any], problem: str) -> None:
    state = healthy_state(**changes)
    assert len(state.problems()) == 1
    assert problem in state.problems()[0]
    assert state.status() == "unhealthy"


def test_unhealthy_wins_over_degraded() -> None:
    assert healthy_state(mode="degraded", redis_ok=False).status() == "unhealthy"


def test_problems_accumulate() -> None:
    state = healthy_state(subscribed=False, database_ok=False, redis_ok=False)
    assert len(state.problems()) == 3


@pytest.mark.parametrize(
    ("age", "stale"),
    [(0.0, False), (INTERVAL, False), (1.5 * INTERVAL, False), (1.5 * INTERVAL + 1, True)],
)
def test_sweep_is_stale_after_one_and_a_half_intervals(age: float, stale: bool) -> None:
    state = State(sweep_interval=INTERVAL, last_sweep_ok_at=1_000_000.0)
    assert state.sweep_stale(now=1_000_000.0 + age) is stale


def test_before_the_first_sweep_staleness_counts_from_start() -> None:
    state = State(sweep_interval=INTERVAL, started_at=1_000_000.0)
    assert not state.sweep_stale(now=1_000_000.0 + 1.5 * INTERVAL)
    assert state.sweep_stale(now=1_000_000.0 + 1.5 * INTERVAL + 1)


def test_snapshot_carries_status_problems_and_iso_times() -> None:
    state = healthy_state(redis_ok=False, last_sweep_ok_at=0.0, checkpoints_archived=7)
    state.started_at = 86400.0
    snap = state.snapshot()
    assert snap["status"] == "unhealthy"
    assert snap["problems"] == state.problems()
    assert snap["started_at"] == "1970-01-02T00:00:00Z"
    assert snap["last_sweep_at"] is None
    assert snap["checkpoints_archived"] == 7
    assert snap["sweep_interval_s"] == INTERVAL
    assert abs(datetime.fromisoformat(snap["last_run"]).timestamp() - time.time()) < 60


# --- write / read --------------------------------------------------------------------------------


def test_write_then_read_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "health.json"
    snap = healthy_state().snapshot()
    health.write(path, snap)
    assert health.read(path) == snap


def test_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "health.json"
    for n in range(3):
        health.write(path, {"n": n})
    assert [p.name for p in tmp_path.iterdir()] == ["health.json"]
    assert health.read(path) == {"n": 2}


def test_write_creates_missing_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "health.json"
    health.write(path, {"ok": True})
    assert health.read(path) == {"ok": True}


def test_failed_write_keeps_the_old_file_and_cleans_up(tmp_path: Path) -> None:
    path = tmp_path / "health.json"
    health.write(path, {"generation": 1})
    with pytest.raises(TypeError):
        health.write(path, {"unserialisable": object()})
    assert [p.name for p in tmp_path.iterdir()] == ["health.json"]
    assert health.read(path) == {"generation": 1}


def test_read_of_a_missing_file_is_none(tmp_path: Path) -> None:
    assert health.read(tmp_path / "nope.json") is None


@pytest.mark.parametrize("content", [b"", b"{", b'{"status": "healthy"', b"not json", b"\xff\xfe"])
def test_read_of_a_garbled_file_is_none(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "health.json"
    path.write_bytes(content)
    assert health.read(path) is None


@pytest.mark.parametrize("content", [b"[]", b'"text"', b"42"])
def test_read_of_a_non_object_file_is_none(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "health.json"
    path.write_bytes(content)
    assert health.read(path) is None


# --- verdict -------------------------------------------------------------------------------------


def aged(snapshot: dict[str, Any], seconds: float) -> dict[str, Any]:
    then = datetime.fromtimestamp(time.time() - seconds, UTC).isoformat()
    return {**snapshot, "last_run": then}


def test_fresh_healthy_snapshot_passes() -> None:
    ok, why = health.verdict(healthy_state().snapshot(), max_age=35)
    assert ok
    assert why == "healthy (events)"


def test_fresh_degraded_snapshot_passes() -> None:
    ok, why = health.verdict(healthy_state(mode="degraded").snapshot(), max_age=35)
    assert ok
    assert why == "degraded (degraded)"


def test_stale_snapshot_fails_with_its_age() -> None:
    ok, why = health.verdict(aged(healthy_state().snapshot(), 300), max_age=35)
    assert not ok
    assert "old (limit 35s)" in why


def test_unhealthy_snapshot_fails_with_its_problems() -> None:
    ok, why = health.verdict(healthy_state(redis_ok=False).snapshot(), max_age=35)
    assert not ok
    assert why == "unhealthy: Redis unreachable"


def test_missing_snapshot_fails() -> None:
    assert health.verdict(None, max_age=35) == (False, "no health file")


def test_a_database_outage_is_not_a_liveness_problem() -> None:
    """A restart cannot fix PostgreSQL, and a restarted archiver holds nothing alive."""
    import time as _time

    state = health.State(
        sweep_interval=3600, mode="events", subscribed=True, redis_ok=True,
        database_ok=False, last_sweep_ok_at=_time.time(),
    )  # fmt: skip
    assert state.liveness_problems() == []
    assert state.problems() == ["PostgreSQL unreachable"]
    assert state.status() == "unhealthy"

"""Short versions of the fault scenarios of `python -m ops.faults` (see ops/faults/):
each runs a seeded workload against private servers while the fault is injected, then the
oracle checks that nothing written was lost or duplicated. The archivers run as the Redis ACL
user of ops/redis-acl.conf and the PostgreSQL role archiver_writer; pg_disk_full needs root
(it mounts a small tmpfs), clock_skew libfaketime (Debian's faketime, `make servers`)."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from ops.faults.cluster import Cluster
from ops.faults.runner import run_scenario
from ops.faults.scenarios import SCENARIOS

SEED = 20261121
IN_MAKE_TEST = (
    "kill9", "pg_outage", "pg_hang", "redis_hang", "redis_restart", "pubsub_killed",
    "replicas", "rewrite_race", "flood", "no_notifications", "retention",
    "log_stall", "acl", "pg_least_privilege", "clock_skew", "pg_lock_timeout", "pg_disk_full",
    "huge_payloads", "erasure_race", "langgraph",
)  # fmt: skip


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One private PostgreSQL for the module; each scenario gets its own database and Redis."""
    owned = Cluster(tmp_path_factory.mktemp("faults"))
    owned.start()
    try:
        yield owned
    finally:
        owned.close()


@pytest.mark.parametrize("name", IN_MAKE_TEST)
async def test_scenario_loses_and_duplicates_nothing(
    name: str, cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    scenario = SCENARIOS[name](True)
    result = await run_scenario(
        cluster, scenario, quick=True, seed=SEED, workdir=tmp_path_factory.mktemp(name)
    )
    summary = result.as_dict()
    detail = orjson.dumps(summary, option=orjson.OPT_INDENT_2, default=str).decode()
    assert result.error is None, detail
    assert result.verdict.written_messages > 0, detail
    assert (result.verdict.lost, result.verdict.duplicated) == (0, 0), detail
    assert result.passed, detail

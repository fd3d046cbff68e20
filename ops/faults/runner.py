"""Run one scenario: servers, archivers, workload + fault, settle, then the oracle's verdict."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from consumer import keys, producer
from consumer.demo import embedded as servers
from ops import redisacl
from ops.faults import checker
from ops.faults.cluster import Cluster
from ops.faults.config import NOTIFICATIONS, REDIS_PASSWORD, Windows, archiver_env
from ops.faults.ledger import Ledger
from ops.faults.observer import Observer
from ops.faults.procs import Fleet
from ops.faults.workload import Mix, Writer, flood, retrying

Inject = Callable[["Run"], Awaitable[None]]
# A scenario with a harness of its own (another source's workload and oracle): it fills Result.
Runner = Callable[["Cluster", "Scenario", bool, int, Path, "Result"], Awaitable[None]]


async def _nothing(run: Run) -> None:
    await asyncio.sleep(0)


def _no_env(name: str) -> dict[str, str]:
    return {}


def _not_relayed(name: str) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class Scenario:
    """A fault and the workload it runs under. `prepare` runs before the archivers start,
    `cleanup` after the verdict; `env` adds to a process's environment by name, `relayed`
    names the processes whose stderr goes through a Relay (a reader that can stall)."""

    name: str
    summary: str
    windows: Windows
    mix: Mix
    inject: Inject
    consumers: tuple[str, ...] = ("consumer",)
    appendonly: bool = False
    redis_config: tuple[str, ...] = ()
    flood: int = 0
    settle_s: float = 45.0
    rss_limit_kb: int = 0
    prepare: Inject = _nothing
    cleanup: Inject = _nothing
    env: Callable[[str], dict[str, str]] = _no_env
    relayed: Callable[[str], bool] = _not_relayed
    runner: Runner | None = None  # None: the seed-json workload, ledger and oracle below


@dataclass(slots=True)
class Run:
    """What a fault injector can reach while its scenario runs."""

    scenario: Scenario
    quick: bool
    rng: random.Random
    seed: int
    workdir: Path
    database_url: str  # the harness's (superuser); the archivers log in as embedded.PG_WRITER
    pg: servers.PostgresServer
    redis: servers.RedisServer
    client: aioredis.Redis
    fleet: Fleet
    ledger: Ledger
    layout: keys.Layout
    producer: producer.Producer
    writer: Writer | None = None
    ignored_tenants: tuple[str, ...] = ()  # rows the scenario put there itself, not the workload
    ignored_conversations: set[tuple[str, str]] = field(default_factory=set)  # (tenant, id) erased
    facts: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)

    @property
    def windows(self) -> Windows:
        return self.scenario.windows

    def writing(self) -> bool:
        return self.writer is not None and not self.writer.done.is_set()


@dataclass(slots=True)
class Result:
    name: str
    passed: bool
    seconds: float
    verdict: checker.Verdict
    expired_unarchived: int = 0
    archive_work: dict[str, Any] = field(default_factory=dict)
    faults: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    crashes: list[dict[str, Any]] = field(default_factory=list)
    windows: dict[str, float | int] = field(default_factory=dict)
    workload: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    workdir: str = ""

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        verdict = data.pop("verdict")
        examples = verdict.pop("examples")
        return {"name": self.name, **verdict, **data, "examples": examples}


async def run_scenario(
    cluster: Cluster, scenario: Scenario, *, quick: bool, seed: int, workdir: Path
) -> Result:
    started = time.monotonic()
    _make_dirs(workdir)
    result = Result(scenario.name, False, 0.0, checker.Verdict(), workdir=str(workdir))
    result.windows = scenario.windows.as_dict()
    try:
        await (scenario.runner or _run)(cluster, scenario, quick, seed, workdir, result)
    except Exception as exc:  # a harness failure is a failed scenario, with the reason
        result.error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}"
    result.seconds = round(time.monotonic() - started, 1)
    result.passed = result.error is None and result.verdict.clean and all(result.checks.values())
    return result


def _make_dirs(workdir: Path) -> None:
    (workdir / "procs").mkdir(parents=True, exist_ok=True)


async def _run(
    cluster: Cluster, scenario: Scenario, quick: bool, seed: int, workdir: Path, result: Result
) -> None:
    database_url = await cluster.database(scenario.name)
    least_privilege = (NOTIFICATIONS, redisacl.user_line(REDIS_PASSWORD))
    redis = cluster.redis(
        scenario.name,
        appendonly=scenario.appendonly,
        extra_config=(*least_privilege, *scenario.redis_config),
    )
    client = aioredis.Redis.from_url(redis.url, socket_timeout=3, socket_connect_timeout=3)
    w = scenario.windows
    redis_url = redisacl.url(redis.port, REDIS_PASSWORD)
    writer_url = cluster.writer_url(database_url)

    def env(name: str) -> dict[str, str]:
        health_file = workdir / f"{name}.health.json"
        return archiver_env(w, redis_url, writer_url, health_file) | scenario.env(name)

    fleet = Fleet(workdir / "procs", env, scenario.relayed)
    prod = producer.Producer(ttl=w.ttl, archive_after=w.archive_after)
    run = Run(
        scenario, quick, random.Random(seed), seed, workdir, database_url, cluster.pg, redis,
        client, fleet, Ledger(), prod.layout, prod,
    )  # fmt: skip
    if not scenario.flood:
        run.writer = Writer(client, prod, run.ledger, run.rng, scenario.mix, seed)
    try:
        await scenario.prepare(run)
        await _exercise(run, result)
    finally:
        fleet.stop_all()
        _heal(run)
        try:
            await scenario.cleanup(run)
        finally:
            await client.aclose()
            redis.stop()


def _heal(run: Run) -> None:
    """Leave the servers running and resumed, whatever the scenario did to them."""
    run.redis.resume()
    run.pg.resume()
    if not run.pg.is_running:
        run.pg.start()


async def _exercise(run: Run, result: Result) -> None:
    scenario = run.scenario
    observer = Observer(run.redis.url, run.layout)
    background = [
        asyncio.create_task(observer.run(), name="observer"),
        asyncio.create_task(run.fleet.supervise(list(scenario.consumers)), name="supervisor"),
    ]
    try:
        if not scenario.flood:
            await _start_consumers(run)
        await asyncio.gather(_workload(run), scenario.inject(run))
        result.faults["settle_s"] = await _settle(run)
        if "flood_fire_at" in run.facts:
            run.facts["drained_s_after_first_shadow"] = round(
                time.time() - run.facts.pop("flood_fire_at"), 1
            )
        await asyncio.sleep(0.3)  # the last log lines reach their files
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
    run.fleet.stop_all()
    await _judge(run, observer, result)


async def _start_consumers(run: Run) -> None:
    procs = [run.fleet.start(name) for name in run.scenario.consumers]
    await asyncio.gather(*(run.fleet.ready(p) for p in procs))


async def _workload(run: Run) -> None:
    scenario = run.scenario
    if scenario.flood:  # written first, then the consumers face the expirations
        started = time.time()
        fire = await flood(run.client, run.producer, run.ledger, run.rng, scenario.flood, run.seed)
        run.facts["flood_write_s"] = round(time.time() - started, 1)
        run.facts["flood_fire_at"] = fire
        await _start_consumers(run)
        return
    assert run.writer is not None
    await run.writer.run()


async def _settle(run: Run) -> float:
    """Wait until every key the workload wrote is gone from Redis (archived, dead-lettered or
    expired), or the settle deadline passes; returns how long it took."""
    start = time.monotonic()
    deadline = start + run.scenario.settle_s
    keys_ = run.ledger.keys
    while time.monotonic() < deadline:
        if not await _any_present(run.client, keys_):
            break
        await asyncio.sleep(0.25)
    return round(time.monotonic() - start, 1)


async def _any_present(client: aioredis.Redis, keys_: list[str]) -> bool:
    for start in range(0, len(keys_), 1000):
        chunk = keys_[start : start + 1000]
        if await retrying(lambda c=chunk: client.exists(*c)):  # type: ignore[misc]
            return True
    return False


def _keep_evidence(run: Run, observer: Observer) -> None:
    """For investigating a failure: what expired, and every write (mode, time) per key."""
    (run.workdir / "expired-checkpoints.json").write_bytes(orjson.dumps(sorted(observer.expired)))
    (run.workdir / "writes.json").write_bytes(orjson.dumps(run.ledger.history()))


async def _judge(run: Run, observer: Observer, result: Result) -> None:
    if run.ignored_conversations:  # erased by the scenario: the oracle leaves them out
        checker.forget(run.ledger, run.layout, run.ignored_conversations)
    state = await checker.gather(
        run.database_url, run.client, run.ledger, run.ignored_tenants, run.ignored_conversations
    )
    result.verdict = checker.check(run.ledger, state)
    result.expired_unarchived = len(observer.expired)
    _keep_evidence(run, observer)
    if observer.expired:
        result.verdict.examples["expired"] = sorted(observer.expired)[: checker.EXAMPLES]
    result.checks["no_checkpoint_expired_unarchived"] = not observer.expired
    denials = await acl_denials(run.client)
    result.checks["no_acl_denials"] = not denials
    if denials:
        result.verdict.examples["acl_denials"] = denials[: checker.EXAMPLES]
    result.checks.update(run.checks)
    result.archive_work = checker.work_counts(run.fleet.events(), run.ledger)
    result.faults |= run.facts | {
        "kills": run.fleet.kills,
        "observer_reconnects": observer.reconnects,
        "peak_rss_mb": round(run.fleet.peak_rss_kb / 1024, 1),
    }
    result.crashes = run.fleet.crashes
    result.workload = {
        "checkpoint_versions": run.ledger.checkpoints_written,
        "keys": len(run.ledger.versions),
        "writes_by_mode": dict(run.ledger.modes),
    }
    if run.scenario.rss_limit_kb:
        result.checks["peak_rss_within_limit"] = (
            0 < run.fleet.peak_rss_kb <= run.scenario.rss_limit_kb
        )


async def acl_denials(client: aioredis.Redis, user: str = redisacl.USER) -> list[str]:
    """Commands or keys the archiver's Redis user was refused (ACL LOG), as text."""
    entries = await redis_command(client, "ACL", "LOG", 100) or []
    found = []
    for entry in entries:
        # A flat list, or a map (redis-py parses ACL LOG so on some servers and protocols)
        pairs = (
            entry.items() if isinstance(entry, dict) else zip(entry[::2], entry[1::2], strict=False)
        )
        fields = {_text(k): v for k, v in pairs}
        if _text(fields.get("username", "")) == user:
            found.append(f"{_text(fields.get('reason'))}: {_text(fields.get('object'))}")
    return found


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


async def redis_command(client: aioredis.Redis, *args: str | int) -> Any:
    with contextlib.suppress(RedisError, OSError, TimeoutError):
        return await client.execute_command(*args)  # type: ignore[no-untyped-call]
    return None

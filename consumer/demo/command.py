"""`archiver demo`: the archiver at work on a simulated agent workload, a day in seconds.

It starts a private Redis and PostgreSQL in a data folder (unless ARCHIVER_REDIS_URL /
ARCHIVER_DATABASE_URL name servers to use), migrates, runs the consumer in-process, plays
the workload, shows it live, and ends when every checkpoint written is archived or
dead-lettered, with a report whose "nothing lost" figures come from direct SQL counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import shlex
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import click
import redis.asyncio as aioredis
from prometheus_client.registry import Collector
from redis.exceptions import RedisError
from rich.console import Console

from consumer import exceptions, logs, metrics, migrate, producer, service, settings
from consumer.cli import commands, options
from consumer.demo import display, embedded, sandbox, workload

READY_S = 30.0
SHUTDOWN_S = 20.0
SETTLE_S = 3.0
MAX_TTL_S = 600.0
CHUNK = 2000
DEFAULT_DATA_DIR = Path(".archiver")
LANGGRAPH = "langgraph-redis"
LANGGRAPH_CONVERSATIONS = 10  # threads of a real graph: each turn writes 4 checkpoints
LANGGRAPH_TURNS = 2
EXTERNAL_PATTERN = "demo:" + producer.DEFAULT_PATTERN  # never another archiver's keys
EXTERNAL_SHADOWS = "archiver-demo:shadow:"
INSTALL_HINT = (
    "`archiver demo` runs its own redis-server and PostgreSQL (initdb, postgres, pg_isready):"
    " install them (apt-get install redis-server postgresql) or give running servers with"
    " ARCHIVER_REDIS_URL and ARCHIVER_DATABASE_URL"
)

# Direct counts for the report (the demo's own questions, not the archiver's runtime queries).
SQL_PER_CONVERSATION = """
SELECT conversation_id, count(*) AS n, count(DISTINCT (tenant_id, message_key)) AS identities
FROM conversation_history WHERE conversation_id = ANY($1::text[]) GROUP BY conversation_id
"""
SQL_DEAD_LETTERS = "SELECT count(*) FROM archive_dead_letters WHERE source_key = ANY($1::text[])"
SQL_WITHOUT_CUSTOMER = """
SELECT count(*) FROM conversation_history
WHERE conversation_id = ANY($1::text[]) AND customer_id IS NULL
"""
SQL_SAMPLE = """
SELECT message_role, "timestamp", message_content, metadata ? 'summary' AS summary
FROM conversation_history WHERE conversation_id = $1 ORDER BY "timestamp", id
"""


@dataclass(frozen=True, slots=True)
class Options:
    """The demo's flags, checked."""

    plan: workload.Plan
    ttl: float
    archive_after: float
    sweep_interval: float
    data_dir: Path
    redis_url: str | None
    database_url: str | None
    keep: bool
    log_level: str
    source: str = "seed-json"

    @property
    def buffer(self) -> float:
        return self.ttl - self.archive_after


def consumer_settings(o: Options, redis_url: str, database_url: str) -> settings.Settings:
    """The consumer's settings on the demo's scaled-down clock; ConfigError if invalid."""
    external = o.redis_url is not None
    return settings.load(
        redis_url=redis_url, database_url=database_url,
        checkpoint_ttl=o.ttl, archive_after=o.archive_after, sweep_interval=o.sweep_interval,
        deadline_poll=max(0.01, min(0.5, o.buffer / 3)), report_interval=5.0, http_port=0,
        key_pattern=EXTERNAL_PATTERN if external else producer.DEFAULT_PATTERN,
        shadow_prefix=EXTERNAL_SHADOWS if external else "archiver:shadow:",
        health_file=o.data_dir / "health.json", log_level=o.log_level, log_format="json",
    )  # fmt: skip


def _producer(s: settings.Settings) -> producer.Producer:
    return producer.Producer(
        ttl=s.checkpoint_ttl,
        archive_after=s.archive_after,
        pattern=s.key_pattern,
        shadow_prefix=s.shadow_prefix,
    )


# --- watching ------------------------------------------------------------------------------------


def _totals(counter: Collector, label: str) -> dict[str, int]:
    """A labelled prometheus counter's totals, by label value."""
    return {
        sample.labels[label]: int(sample.value)
        for metric in counter.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    }


async def _count_existing(client: aioredis.Redis, names: Sequence[str]) -> int:
    total = 0
    for i in range(0, len(names), CHUNK):
        total += int(await client.exists(*names[i : i + CHUNK]))
    return total


class Watch:
    """Looks at the workload, Redis and the consumer; decides when the demo is over."""

    def __init__(
        self, consumer: service.Consumer, work: workload.Workload, client: aioredis.Redis
    ) -> None:
        self.consumer = consumer
        self.work = work
        self.client = client
        self.layout = consumer.parts.archiver.redis.layout
        self.started = time.monotonic()
        self.latency = display.buckets(metrics.LATENCY)
        self.events = _totals(metrics.EVENTS, "event")
        self.sweeps = sum(_totals(metrics.SWEEPS, "result").values())
        self._emptied_at: float | None = None
        self._limit: float | None = None

    async def look(self) -> display.Figures:
        tally, state = self.work.tally, self.consumer.state
        keys = list(tally.keys)
        latency = display.since(display.buckets(metrics.LATENCY), self.latency)
        return display.Figures(
            elapsed=time.monotonic() - self.started,
            planned=tally.planned, written=tally.written, shadowless=tally.shadowless,
            alive=await _count_existing(self.client, keys),
            shadows=await _count_existing(self.client, [self.layout.shadow(k) for k in keys]),
            indexed=int(await self.client.zcard(self.layout.deadlines)),
            events={
                k: v - self.events.get(k, 0) for k, v in _totals(metrics.EVENTS, "event").items()
            },
            sweeps=sum(_totals(metrics.SWEEPS, "result").values()) - self.sweeps,
            archived=state.checkpoints_archived, messages=state.messages_archived,
            dead_letters=state.dead_letters, errors=state.errors, mode=state.mode,
            p50=display.quantile(latency, 0.5), p99=display.quantile(latency, 0.99),
        )  # fmt: skip

    def over(self, f: display.Figures, ttl: float) -> bool:
        """Every checkpoint written is gone from Redis and (or after a grace) accounted for."""
        if not self.work.tally.finished:
            return False
        now = time.monotonic()
        self._limit = self._limit or now + ttl + SETTLE_S
        if f.alive:
            self._emptied_at = None
            return now > self._limit
        self._emptied_at = self._emptied_at or now
        settled = f.archived + f.dead_letters >= f.written
        return settled or now - self._emptied_at > SETTLE_S


def _raise_if_failed(*tasks: asyncio.Task[None]) -> None:
    for task in tasks:
        if task.done():
            task.result()
            if task.get_name() == "consumer":
                raise exceptions.ArchiverError("the consumer stopped during the demo")


async def _watch(
    watch: Watch, view: display.View, ttl: float, tasks: Sequence[asyncio.Task[None]]
) -> display.Figures:
    while True:
        _raise_if_failed(*tasks)
        figures = await watch.look()
        if watch.over(figures, ttl):
            view.show(figures, final=True)
            return figures
        view.show(figures)
        await asyncio.sleep(view.every)


# --- the report ----------------------------------------------------------------------------------


async def _sample(pool: asyncpg.Pool, conversation_id: str) -> list[display.Row]:
    rows = await pool.fetch(SQL_SAMPLE, conversation_id)
    return [display.Row(r[0], r[1], r[2], bool(r[3])) for r in rows]


def _about(s: workload.Script) -> str:
    found = f"customer identified at checkpoint {(s.identified_at or 0) + 1}"
    summary = f"summarized from checkpoint {(s.summarize_from or 0) + 1}"
    return f"tenant {s.tenant.name}, {s.checkpoints} checkpoints, {found}, {summary}"


async def report(
    pool: asyncpg.Pool, client: aioredis.Redis, work: workload.Workload, f: display.Figures
) -> display.Report:
    """Count what the archive holds for the workload, with SQL, and what Redis still has."""
    t = work.tally
    rows = await pool.fetch(SQL_PER_CONVERSATION, sorted(t.conversations))
    found = {r["conversation_id"]: int(r["identities"]) for r in rows}
    expected = Counter(conversation for conversation, _ in t.expected)
    missing, short = display.missing_by_conversation(dict(expected), found)
    total = sum(int(r["n"]) for r in rows)
    return display.Report(
        conversations=len(t.conversations), written=t.written, malformed=len(t.malformed_keys),
        shadowless=t.shadowless, archived=f.archived, messages=f.messages,
        dead_letters=f.dead_letters, expected_messages=len(t.expected), rows=total,
        duplicates=total - sum(found.values()), missing=missing, short_conversations=list(short),
        expected_dead=len(t.malformed_keys),
        dead_rows=int(await pool.fetchval(SQL_DEAD_LETTERS, t.keys)),
        keys_left=await _count_existing(client, t.keys),
        late_customers=len(t.late_customers),
        rows_without_customer=int(await pool.fetchval(SQL_WITHOUT_CUSTOMER, sorted(t.late_customers))),
        seconds=f.elapsed, p50=f.p50, p99=f.p99,
        sample_id=work.showcase.conversation_id, sample_about=_about(work.showcase),
        sample=await _sample(pool, work.showcase.conversation_id),
    )  # fmt: skip


# --- playing -------------------------------------------------------------------------------------


async def _migrate(database_url: str) -> None:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        await migrate.migrate(conn)
    finally:
        await conn.close()


async def _ready(consumer: service.Consumer, task: asyncio.Task[None]) -> None:
    """Wait for the consumer's first sweep and notification self-test."""
    try:
        async with asyncio.timeout(READY_S):
            while consumer.state.mode == "starting" or consumer.state.last_sweep_ok_at is None:
                _raise_if_failed(task)
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise exceptions.ArchiverError(
            f"the consumer was not ready after {READY_S:.0f}s: see its log,"
            f" {consumer.settings.health_file.parent / 'demo.log'}"
        ) from None


@contextlib.asynccontextmanager
async def _consuming(
    s: settings.Settings,
) -> AsyncIterator[tuple[service.Consumer, asyncio.Task[None]]]:
    """The consumer running in this event loop (and its task), ready; stopped on leaving."""
    async with service.connected(s) as parts:
        consumer = service.Consumer(parts)
        task = asyncio.create_task(consumer.run(), name="consumer")
        try:
            await _ready(consumer, task)
            yield consumer, task
        finally:
            consumer.stopping.set()
            await asyncio.wait([task], timeout=SHUTDOWN_S)


TITLE = "archiver demo"


def _setup(o: Options) -> display.Rows:
    """What the live view shows above its figures (a title this long was cut at 80 columns)."""
    clock = (
        f"TTL {settings.format_duration(o.ttl)}, archive after"
        f" {settings.format_duration(o.archive_after)}, sweep every"
        f" {settings.format_duration(o.sweep_interval)}"
    )
    return [("workload", f"{o.plan.conversations} conversations"), ("clock", clock)]


async def play(o: Options, s: settings.Settings, console: Console) -> display.Report:
    """Migrate, run the consumer and the workload, watch until done; the SQL report."""
    await _migrate(s.database_url)
    client = aioredis.Redis.from_url(s.redis_url, socket_connect_timeout=s.redis_timeout)
    try:
        await client.ping()
        async with _consuming(s) as (consumer, running):
            work = workload.Workload(o.plan, client, _producer(s))
            watch = Watch(consumer, work, client)
            writing = asyncio.create_task(work.run(), name="workload")
            try:
                with display.View(console, TITLE, _setup(o)) as view:
                    figures = await _watch(watch, view, o.ttl, [writing, running])
            finally:
                writing.cancel()
            return await report(consumer.parts.pool, client, work, figures)
    finally:
        await client.aclose()


# --- the command ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _logging_to(path: Path, level: str) -> Iterator[None]:
    """Logs go to a file while the demo owns the terminal; back to stderr afterwards."""
    with path.open("a", encoding="utf-8") as handle:
        logs.configure(level, "json", stream=handle)
        logging.basicConfig(level=logging.WARNING, stream=handle, force=True)
        try:
            yield
        finally:
            logs.configure(level, "json")
            logging.basicConfig(level=logging.WARNING, stream=sys.stderr, force=True)


def _console() -> Console:
    console = Console(highlight=False)
    return console if console.is_terminal else Console(highlight=False, width=120)


def _describe_servers(console: Console, o: Options, ends: sandbox.Endpoints) -> None:
    for r in ends.started:
        console.print(f"started {r.name} (pid {r.pid}) at {r.url}", markup=False)
    external = {"Redis": ends.redis_url, "PostgreSQL": ends.database_url}
    for name, url in external.items():
        if all(r.url != url for r in ends.started):
            console.print(f"using the {name} server you gave: {url}", markup=False)
    for directory in ends.temporary:
        console.print(
            f"PostgreSQL's data is in {directory}, not in {o.data_dir}: its system user cannot"
            f" enter {o.data_dir.resolve()}; `--stop` and `--clean` remove it",
            markup=False,
        )


def exports(s: settings.Settings) -> list[str]:
    """The `export` lines that point the other commands at the demo's servers."""
    values = {"ARCHIVER_REDIS_URL": s.redis_url, "ARCHIVER_DATABASE_URL": s.database_url,
              "ARCHIVER_HEALTH_FILE": str(s.health_file.resolve())}  # fmt: skip
    if s.source != "seed-json":
        values |= {"ARCHIVER_SOURCE": s.source, "ARCHIVER_THREAD_PATTERN": s.thread_pattern or ""}
    elif s.key_pattern != producer.DEFAULT_PATTERN:
        values |= {"ARCHIVER_KEY_PATTERN": s.key_pattern,
                   "ARCHIVER_SHADOW_PREFIX": s.shadow_prefix}  # fmt: skip
    return [f"export {name}={shlex.quote(value)}" for name, value in values.items()]


def _describe_kept(
    console: Console, o: Options, ends: sandbox.Endpoints, s: settings.Settings
) -> None:
    flag = "" if o.data_dir == DEFAULT_DATA_DIR else f" --data-dir {o.data_dir}"
    lines = ["servers left running (--keep):"]
    for r in ends.started:
        lines.append(f"  {r.name:<12} {r.url}   (pid {r.pid})")
        tool = f"psql {r.url}" if r.url.startswith("postgresql") else f"redis-cli -p {r.port}"
        lines.append(f"  {'':<12} {tool}")
    kills = "; ".join(f"kill -{signal.Signals(r.signal).name[3:]} {r.pid}" for r in ends.started)
    lines.append(f"stop them with `archiver demo --stop{flag}` (or `--clean{flag}` to also")
    lines.append(f"delete {o.data_dir}), or by hand: {kills}")
    lines.append("to run the other commands against them (archiver status, conversations, ...):")
    console.print("\n".join([*lines, *exports(s)]), markup=False, soft_wrap=True)


def _duration(ctx: click.Context, param: click.Parameter, value: Any) -> float | None:
    """Click callback: '30s', '250ms', '2m' or seconds, as seconds."""
    try:
        return None if value is None else settings.parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def _sweep_interval(ttl: float, after: float) -> float:
    """10s, but at most 2/3 of the buffer and at most ARCHIVE_AFTER (the settings' rules)."""
    return round(max(0.1, min(10.0, (ttl - after) * 2 / 3, after)), 1)


def _options(values: dict[str, Any]) -> Options:
    ttl, after = values["ttl"], values["archive_after"]
    if ttl > MAX_TTL_S:
        raise click.UsageError(
            f"--ttl / ARCHIVER_CHECKPOINT_TTL is {settings.format_duration(ttl)}: the demo scales"
            f" a day down to seconds, so it takes at most {settings.format_duration(MAX_TTL_S)}"
        )
    sweep = values["sweep_interval"] or _sweep_interval(ttl, after)
    source = values["source"]
    default_conversations = LANGGRAPH_CONVERSATIONS if source == LANGGRAPH else 200
    plan = workload.Plan(
        conversations=values["conversations"] or default_conversations,
        max_checkpoints=values["checkpoints"],
        spread=values["spread"],
        seed=values["seed"],
        tag=secrets.token_hex(2),
    )
    return Options(
        plan, ttl, after, sweep, values["data_dir"], values["redis_url"],
        values["database_url"], values["keep"], values["log_level"], source,
    )  # fmt: skip


def _fail(message: str, code: int = 2) -> None:
    click.echo(f"archiver demo: {message}", err=True)
    sys.exit(code)


def _stop_command(data_dir: Path, clean: bool) -> None:
    existed = data_dir.exists()
    try:
        stopped = sandbox.clean(data_dir) if clean else sandbox.stop(data_dir)
    except exceptions.ArchiverError as exc:
        _fail(str(exc))
    for r in stopped:
        click.echo(f"stopped {r.name} (pid {r.pid}) at {r.url}")
    if not stopped:
        click.echo(f"no demo server was running in {data_dir}")
    if clean and existed:
        click.echo(f"removed {data_dir}")


def _settings(o: Options, redis_url: str, database_url: str) -> settings.Settings:
    if o.source == LANGGRAPH:
        from consumer.demo import langgraph

        return langgraph.demo_settings(o, redis_url, database_url)
    return consumer_settings(o, redis_url, database_url)


def _play(o: Options, s: settings.Settings, console: Console) -> bool:
    """Play the source's workload; whether nothing was lost."""
    if o.source == LANGGRAPH:
        from consumer.demo import langgraph

        plan = langgraph.Plan(o.plan.conversations, LANGGRAPH_TURNS, o.plan.tag)
        return asyncio.run(langgraph.play(o, s, plan, console)).nothing_lost
    result = asyncio.run(play(o, s, console))
    display.render(console, result)
    return result.nothing_lost


def run(o: Options, console: Console) -> bool:
    """Prepare the data folder, start what is needed, play; servers stopped unless kept.
    Whether nothing was lost."""
    try:
        _settings(o, o.redis_url or "redis://", o.database_url or "postgresql://")
    except exceptions.ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    sandbox.prepare(o.data_dir)
    stack = o.source == LANGGRAPH
    with (
        _logging_to(o.data_dir / "demo.log", o.log_level),
        sandbox.running(o.data_dir, o.redis_url, o.database_url, o.keep, stack) as ends,
    ):
        _describe_servers(console, o, ends)
        s = _settings(o, ends.redis_url, ends.database_url)
        nothing_lost = _play(o, s, console)
        if o.keep and ends.started:
            _describe_kept(console, o, ends, s)
        return nothing_lost


@click.command("demo", cls=commands.Command)
@click.option(
    "--source",
    type=click.Choice(["seed-json", LANGGRAPH]),
    default="seed-json",
    show_default=True,
    help=(
        "What writes the checkpoints: the simulated agents (seed-json), or a real LangGraph"
        " graph (fake chat model, tool round trip, 2 turns) through langgraph-checkpoint-redis's"
        " RedisSaver into a Redis Stack (langgraph-redis)."
    ),
)
@click.option(
    "--conversations",
    type=click.IntRange(1, 100_000),
    default=None,
    envvar="ARCHIVER_DEMO_CONVERSATIONS",
    show_envvar=True,
    help=f"Conversations held [default: 200; {LANGGRAPH_CONVERSATIONS} with langgraph-redis].",
)
@click.option(
    "--checkpoints",
    type=click.IntRange(2, 100),
    default=6,
    show_default=True,
    envvar="ARCHIVER_DEMO_CHECKPOINTS",
    show_envvar=True,
    help="Most checkpoints one conversation writes (one every 1-2.5s).",
)
@click.option(
    "--spread",
    callback=_duration,
    metavar="DURATION",
    default="10s",
    show_default=True,
    envvar="ARCHIVER_DEMO_SPREAD",
    show_envvar=True,
    help="Conversations start within this time.",
)
@click.option(
    "--ttl",
    callback=_duration,
    metavar="DURATION",
    default="30s",
    show_default=True,
    envvar="ARCHIVER_CHECKPOINT_TTL",
    show_envvar=True,
    help="TTL the agents give checkpoints (a day, scaled down).",
)
@click.option(
    "--archive-after",
    callback=_duration,
    metavar="DURATION",
    default="15s",
    show_default=True,
    envvar="ARCHIVER_ARCHIVE_AFTER",
    show_envvar=True,
    help="Archive this long after a checkpoint is written.",
)
@click.option(
    "--sweep-interval",
    callback=_duration,
    metavar="DURATION",
    default=None,
    envvar="ARCHIVER_SWEEP_INTERVAL",
    show_envvar=True,
    help="Time between sweeps [default: 10s, at most 2/3 of the buffer].",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    envvar="ARCHIVER_DEMO_SEED",
    show_envvar=True,
    help="Seed of the simulated workload.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DATA_DIR,
    show_default=True,
    envvar="ARCHIVER_DEMO_DATA_DIR",
    show_envvar=True,
    help="Folder of the embedded servers, logs and health file.",
)
@click.option(
    "--redis-url",
    default=None,
    type=options.SettingType(settings.Settings.model_fields["redis_url"]),
    envvar="ARCHIVER_REDIS_URL",
    show_envvar=True,
    help="Use this Redis instead of starting one (keys go under demo:).",
)
@click.option(
    "--database-url",
    default=None,
    type=options.SettingType(settings.Settings.model_fields["database_url"]),
    envvar="ARCHIVER_DATABASE_URL",
    show_envvar=True,
    help="Use this PostgreSQL instead of starting one (it is migrated).",
)
@click.option("--keep", is_flag=True, help="Leave the embedded servers running afterwards.")
@click.option("--stop", "stop_only", is_flag=True, help="Stop servers left by --keep, then exit.")
@click.option("--clean", is_flag=True, help="Stop servers left by --keep, delete the data folder.")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    envvar="ARCHIVER_LOG_LEVEL",
    show_envvar=True,
    help="Level of the consumer's log, written to DATA_DIR/demo.log.",
)
def command(stop_only: bool, clean: bool, **values: Any) -> None:
    """A simulated agent workload archived live, on private servers: nothing lost, shown by SQL.

    Exits 0 when every message written is in PostgreSQL (and every malformed checkpoint in
    the dead-letter table), 1 if anything was lost, 2 if the demo could not run.
    """
    if stop_only or clean:
        _stop_command(values["data_dir"], clean)
        return
    console = _console()
    try:
        nothing_lost = run(_options(values), console)
    except embedded.ServerBinaryNotFoundError as exc:
        _fail(f"{INSTALL_HINT}.\n{exc}")
    except exceptions.ArchiverError as exc:
        _fail(str(exc))
    except (OSError, asyncpg.PostgresError, RedisError, RuntimeError) as exc:
        _fail(f"{type(exc).__name__}: {exc}", code=1)
    except KeyboardInterrupt:
        _fail("interrupted; the servers it started are stopped", code=130)
    sys.exit(0 if nothing_lost else 1)

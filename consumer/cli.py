"""The `archiver` command.

How a command is written (follow this for every new one; tests/unit/test_cli_conventions.py
and tests/acceptance/test_cli_terminal.py check it):

    @main.command("thing")                           # a commands.Command: one error handler
    @options.json_option                             # prints data? then --json (as `out`)
    @options.page_options(default=20)                # a list? --limit N, --after CURSOR
    @options.time_option("--since", "Only since.")   # takes a time? ISO 8601 or 1h/7d ago...
    @options.tz_option                               # ...and --tz for zone-less input
    @options.settings_options("thing")               # settings: add "thing" to the commands
    def thing_command(out: terminal.Output, limit, cursor, since, **values) -> ExitCode | None:
        s = load_settings(values)                    # validated settings, logging configured
        page = run_db(s, lambda conn: things.page(conn, limit, cursor))
        out.items(page.rows, things.COLUMNS, page.next_cursor)

* Settings: a field in consumer/settings.py with `commands` naming the command becomes its
  flag and ARCHIVER_* variable, typed and validated there; the README's tables list it.
* Errors: raise; never print a traceback or call sys.exit. `exceptions.UsageError` and
  ConfigError exit 2, `NotFoundError` and other ArchiverErrors 1, connection failures 3 (wrap
  the code in `exits.reaching_postgres(url)` / `exits.reaching_redis(url)` so the message names
  the URL to check; `run_db` does it). Return an ExitCode for "done, but failed" (exit 1).
* Output: stored strings only through `terminal` (`Output.items`, `.document`, `.summary`,
  `terminal.visible`); a list's JSON is {"items": [...], "next": cursor}; times via `times`.
* Sub-commands (`dead-letters replay`): repeat the group's options they take, so that they may
  be given after the sub-command too, and read them with `options.inherit(ctx)`.
* An option with its own ARCHIVER_* variable declares it (`envvar=`): the check for misspelt
  variables knows every variable some option or setting reads.
* Docs: a row in the README's command table (tests/unit/test_docs_tables.py compares it with
  the command's flags), and the fields of its --json in the README's JSON table.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import click
from rich.console import Console

from consumer import (
    __version__,
    commands,
    deadletters,
    demo,
    exceptions,
    exits,
    history,
    jobs,
    keys,
    logs,
    migrate,
    options,
    partitions,
    periodic,
    policies,
    retention,
    service,
    settings,
    status,
    store,
    terminal,
    times,
)
from consumer.exits import ExitCode

T = TypeVar("T")
EXIT_CODES = (
    "Exit codes: 0 done; 1 the work failed or found nothing (a failed checkpoint, no such"
    " conversation, a failing check); 2 usage or configuration (a flag, an ARCHIVER_* variable,"
    " a missing migration); 3 Redis or PostgreSQL unreachable; 130 interrupted."
)


def load_settings(values: dict[str, Any]) -> settings.Settings:
    """The settings from the command's flags and the environment; logging configured."""
    loaded = settings.load(**values)
    logs.configure(loaded.log_level, loaded.log_format, buffer_bytes=loaded.log_buffer)
    return loaded


def run_db(s: settings.Settings, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """`work` on one connection to the archive; connection failures name --database-url."""

    async def connected() -> T:
        conn = await asyncpg.connect(s.database_url, timeout=s.db_timeout)
        try:
            return await work(conn)
        finally:
            await conn.close()

    with exits.reaching_postgres(s.database_url):
        return asyncio.run(connected())


# Earlier names, kept so that commands written before these conventions still work; new code
# uses the names above (and raises instead of calling _fail).
settings_options = options.settings_options
_settings = load_settings
_run_db = run_db


def _fail(message: str, code: int = 2) -> None:
    raise exceptions.UsageError(message) if code == 2 else exceptions.ArchiverError(message)


def _print_json(value: Any) -> None:
    click.echo(terminal.dumps(value))


@click.group(
    "archiver",
    cls=commands.Group,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES,
)
@click.version_option(__version__, prog_name="archiver")
def main() -> None:
    """Archive agent conversation checkpoints from Redis into PostgreSQL before their TTL fires."""


# --- running -------------------------------------------------------------------------------------


@main.command("migrate")
@options.json_option
@options.settings_options("migrate")
def migrate_command(out: terminal.Output, **values: Any) -> None:
    """Apply the pending numbered migrations of sql/ (serialized; re-running is a no-op)."""
    s = load_settings(values)
    applied = run_db(s, migrate.migrate)
    names = [f"{m.version:04d}_{m.name}" for m in applied]
    line = f"applied: {', '.join(names)}" if names else "schema is up to date"
    out.summary({"applied": names}, line)


@main.command("run")
@options.settings_options("run")
def run_command(**values: Any) -> None:
    """The always-on consumer: keyevent listener, deadline index, sweeper, health and metrics."""
    s = load_settings(values)
    service.tune_gc()
    try:
        asyncio.run(service.run(s))
    except OSError as exc:  # Redis and PostgreSQL errors are their own types: this is ours
        raise exceptions.ArchiverError(
            f"cannot start: {exc}: is --http-port / ARCHIVER_HTTP_PORT ({s.http_port}) free?"
        ) from exc


@main.command("sweep")
@options.json_option
@options.settings_options("sweep")
def sweep_command(out: terminal.Output, **values: Any) -> ExitCode:
    """One sweep, then exit (for cron): exit 1 if any checkpoint failed."""
    s = load_settings(values)
    service.tune_gc()
    with exits.reaching_redis(s.redis_url):
        report = asyncio.run(service.sweep_once(s))
    o = report.outcome
    found = {"found": report.found, "archived": o.archived, "messages": o.messages,
             "dead_letters": o.dead_letters, "errors": o.errors,
             "shadows_repaired": report.shadows_repaired,
             "duration_s": round(report.duration_s, 3), "skipped": report.skipped}  # fmt: skip
    out.summary(found, _sweep_line(found))
    return ExitCode.FAILED if o.errors else ExitCode.OK


def _sweep_line(r: dict[str, Any]) -> str:
    return (
        f"found {r['found']}, archived {r['archived']} ({r['messages']} messages),"
        f" dead-lettered {r['dead_letters']}, errors {r['errors']}, shadows repaired"
        f" {r['shadows_repaired']}, {r['duration_s']:.2f}s"
        + (" (skipped: another sweep runs)" if r["skipped"] else "")
    )


# --- health --------------------------------------------------------------------------------------


@main.command("status")
@options.json_option
@click.option("--limit", default=10, show_default=True, type=click.IntRange(0, 1000),
              help="Archive runs to show.")  # fmt: skip
@options.settings_options("status")
def status_command(out: terminal.Output, limit: int, **values: Any) -> ExitCode:
    """The local health file (its age and `check`'s verdict), the consumers' heartbeats in
    Redis, and the database: schema, open dead letters, last archive runs.

    Exit 0 when every part could be read, else 3 (a server unreachable) or 2 (no schema).
    """
    s = load_settings(values)
    report = asyncio.run(status.gather(s, limit))
    out.document(report, lambda console: status.render(report, console))
    return status.exit_code(report)


@main.command("check")
@options.json_option
@options.settings_options("check")
def check_command(out: terminal.Output, **values: Any) -> ExitCode:
    """Exit 0 if this host's health file is fresh and not unhealthy, else 1 (container health
    checks; from elsewhere use `archiver health`)."""
    s = load_settings(values)
    part = status.health_file(s)
    out.summary(part, part["check"]["reason"])
    return ExitCode.OK if part["check"]["ok"] else ExitCode.FAILED


@main.command("health")
@options.json_option
@click.option("--min-consumers", default=1, show_default=True, type=click.IntRange(0, 1000),
              help="Healthy `archiver run` heartbeats required (0: cron sweeps alone).")  # fmt: skip
@options.settings_options("health")
def health_command(out: terminal.Output, min_consumers: int, **values: Any) -> ExitCode:
    """From anywhere: PostgreSQL reachable and migrated, Redis reachable, and enough consumers
    renewing their heartbeat and not unhealthy. Exit 0 if all pass, 1 if a check fails, 3 if a
    server is unreachable."""
    s = load_settings(values)
    result, code = asyncio.run(status.checks(s, min_consumers))
    out.document(result, lambda console: status.render_checks(result, console))
    return code


# --- reading the archive -------------------------------------------------------------------------


@main.command("history")
@click.argument("conversation_id")
@click.option("--tenant", help="Only this tenant's conversation of that id.")
@options.time_option("--since", "Only messages from then on.")
@options.time_option("--until", "Only messages before then.")
@options.tz_option
@options.page_options(default=100)
@options.json_option
@options.settings_options("history")
def history_command(
    conversation_id: str,
    tenant: str | None,
    since: times.Instant | None,
    until: times.Instant | None,
    limit: int,
    cursor: str | None,
    out: terminal.Output,
    **values: Any,
) -> None:
    """A conversation's archived messages, in order, each shown whole. Exit 1 if it has none."""
    s = load_settings(values)
    window = history.Window(since, until)
    page = run_db(
        s, lambda conn: history.messages(conn, conversation_id, tenant, window, limit, cursor)
    )
    out.items(page.rows, [], page.next_cursor, "no messages", draw=history.render_messages)


@main.command("conversations")
@click.option("--tenant", help="Only this tenant.")
@click.option("--customer", help="Only this customer.")
@click.option("--user", help="Only this user.")
@options.time_option("--since", "Only conversations active since then.")
@options.time_option("--until", "Only conversations started before then.")
@options.tz_option
@options.page_options(default=20)
@options.json_option
@options.settings_options("conversations")
def conversations_command(
    tenant: str | None,
    customer: str | None,
    user: str | None,
    since: times.Instant | None,
    until: times.Instant | None,
    limit: int,
    cursor: str | None,
    out: terminal.Output,
    **values: Any,
) -> None:
    """Archived conversations, newest first, with message counts and time span."""
    s = load_settings(values)
    filters = history.Filters(tenant, customer, user, history.Window(since, until))
    page = run_db(s, lambda conn: history.conversations(conn, filters, limit, cursor))
    out.items(page.rows, history.CONVERSATION_COLUMNS, page.next_cursor, "no conversations match")


# --- dead letters --------------------------------------------------------------------------------


@main.group("dead-letters", invoke_without_command=True)
@click.option("--all", "include_resolved", is_flag=True, help="Include resolved ones.")
@options.page_options(default=100, maximum=100_000)
@options.json_option
@options.settings_options("dead-letters")
@click.pass_context
def dead_letters_group(
    ctx: click.Context,
    /,
    include_resolved: bool,
    limit: int,
    cursor: str | None,
    out: terminal.Output,
    **values: Any,
) -> None:
    """Quarantined checkpoints and why; `replay` retries them after a decoder fix."""
    if ctx.invoked_subcommand is not None:
        return
    s = load_settings(values)
    page = run_db(s, lambda conn: deadletters.listing(conn, include_resolved, limit, cursor))
    out.items(page.rows, deadletters.COLUMNS, page.next_cursor, "no open dead letters")


@dead_letters_group.command("replay")
@click.argument("ids", nargs=-1, type=click.IntRange(min=1), metavar="[ID]...")
@options.json_option
@options.settings_options("dead-letters")
@click.pass_context
def replay_command(ctx: click.Context, /, ids: tuple[int, ...], **_: Any) -> ExitCode:
    """Decode open dead letters (all, or the IDs) again; archive and resolve those that decode
    now. Exit 1 if any still fails or an ID is not an open dead letter."""
    values = options.inherit(ctx)
    out: terminal.Output = values.pop("out")
    s = load_settings({k: v for k, v in values.items() if k in settings.Settings.model_fields})
    with exits.reaching_postgres(s.database_url):
        result = asyncio.run(_replay(s, list(ids)))
    out.summary(
        {"archived": result.archived, "messages": result.messages,
         "still_failing": result.still_failing, "not_found": result.not_found},
        _replay_line(result),
    )  # fmt: skip
    return ExitCode.FAILED if result.still_failing or result.not_found else ExitCode.OK


async def _replay(s: settings.Settings, ids: list[int]) -> deadletters.Replay:
    layout = keys.layout_from(s.key_pattern, s.shadow_prefix)
    pool = await store.connect(s.database_url, command_timeout=s.db_timeout, max_size=2)
    try:
        the_store = store.Store(pool)
        return await deadletters.replay(the_store, layout, service.codec_options(s), ids)
    finally:
        await pool.close()


def _replay_line(result: deadletters.Replay) -> str:
    line = (
        f"replayed: {result.archived} archived ({result.messages} messages),"
        f" {result.still_failing} still failing"
    )
    if result.not_found:
        missing = ", ".join(str(i) for i in result.not_found)
        line += f"; not open dead letters: {missing} (see `archiver dead-letters --all`)"
    return line


main.add_command(demo.command)


# --- retention, periodic jobs and partitions (consumer/retention.py, jobs.py, partitions.py) ---


def _scope(default: bool, tenant: str | None) -> str | None:
    """The tenant, or None for --default: exactly one of the two."""
    if default == (tenant is not None):
        raise exceptions.UsageError("give exactly one of --default and --tenant T")
    if tenant is not None and not tenant:
        raise exceptions.UsageError("--tenant: a tenant id cannot be empty")
    return tenant


def _policy_change(s: settings.Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    """A policy change; the archiver's own role (which may only read them) is told whose
    connection it needs."""

    async def owner_only(conn: asyncpg.Connection) -> T:
        try:
            return await work(conn)
        except asyncpg.InsufficientPrivilegeError:
            raise exceptions.ConfigError(
                "changing a retention policy needs the schema owner's connection: give"
                " --database-url / ARCHIVER_DATABASE_URL of the migration owner (the archiver's"
                " own role may only read policies; ops/OPERATIONS.md, Retention)"
            ) from None

    return run_db(s, owner_only)


@main.group("retention")
def retention_group() -> None:
    """Retention policies per tenant (keep period; then delete or export) and applying them.

    A tenant without its own policy follows the default; with neither, nothing of it is ever
    deleted. `apply` runs under the same lease as the scheduled job."""


@retention_group.command("set")
@click.option("--default", "default", is_flag=True, help="Set the default policy.")
@click.option("--tenant", help="Set this tenant's policy.")
@click.option("--keep", required=True, metavar="DURATION",
              help="Keep period: 7d, 90d, 365d (at least 1d).")  # fmt: skip
@click.option("--then", "then", type=click.Choice(policies.ACTIONS), default="delete",
              show_default=True, help="What happens to rows older than that.")  # fmt: skip
@options.json_option
@options.settings_options("retention")
def retention_set_command(
    default: bool, tenant: str | None, keep: str, then: str, out: terminal.Output, **values: Any
) -> None:
    """Set the default or a tenant's policy (needs the schema owner's connection)."""
    s = load_settings(values)
    wanted = policies.Policy(_scope(default, tenant), policies.parse_keep(keep), then)
    stored = _policy_change(s, lambda conn: policies.put(conn, wanted))
    out.summary(stored.as_item(), policies.describe(stored))


@retention_group.command("unset")
@click.option("--default", "default", is_flag=True, help="Remove the default policy.")
@click.option("--tenant", help="Remove this tenant's policy (it follows the default again).")
@options.json_option
@options.settings_options("retention")
def retention_unset_command(
    default: bool, tenant: str | None, out: terminal.Output, **values: Any
) -> None:
    """Remove the default or a tenant's policy (needs the schema owner's connection); exit 1
    if there was none."""
    s = load_settings(values)
    scope = _scope(default, tenant)
    removed = _policy_change(s, lambda conn: policies.remove(conn, scope))
    if removed is None:
        raise exceptions.NotFoundError("no such policy (see `archiver retention show`)")
    out.summary(removed.as_item(), "removed: " + policies.describe(removed))


@retention_group.command("show")
@options.json_option
@options.settings_options("retention")
def retention_show_command(out: terminal.Output, **values: Any) -> None:
    """The policies: the default first, then one per tenant."""
    s = load_settings(values)
    found = run_db(s, policies.load)
    items = [p.as_item() for p in found.all()]
    out.items(items, policies.COLUMNS, None, "no retention policy: nothing is ever deleted")


@retention_group.command("apply")
@click.option("--dry-run", is_flag=True, help="Only report what would go.")
@options.json_option
@options.settings_options("retention")
def retention_apply_command(dry_run: bool, out: terminal.Output, **values: Any) -> ExitCode:
    """Apply the policies now: what went (or, with --dry-run, would go), per tenant and month,
    rows and conversations. Runs under the retention job's lease; exit 1 if the run failed."""
    s = load_settings(values)
    if dry_run:
        report = run_db(s, lambda conn: retention.preview(conn, partitions.method(s)))
        out.document(report | {"next": None}, lambda console: retention.render(report, console))
        return ExitCode.OK
    return _show_run(out, _run_job(s, "retention"), retention.render)


def _run_job(s: settings.Settings, name: str) -> jobs.Outcome:
    """Run a job in this process under its lease (skipped if a replica is running it)."""
    job = periodic.named(s, name)

    async def work() -> jobs.Outcome:
        pool = await store.connect(s.database_url, command_timeout=s.job_timeout, max_size=3)
        try:
            outcome = await jobs.Runner(pool, s).run(job, "manual")
        finally:
            await pool.close()
        if outcome is None:  # only a scheduled slot can be "already done"
            raise exceptions.ArchiverError(f"job {name} did not run")
        return outcome

    with exits.reaching_postgres(s.database_url):
        return asyncio.run(work())


def _show_run(
    out: terminal.Output,
    outcome: jobs.Outcome,
    show: Callable[[dict[str, Any], Console], None],
) -> ExitCode:
    """A run's report as the job's own view shows it; a skipped or failed run in one line."""
    if outcome.status == "ok":
        listed = {"next": None} if "items" in outcome.counts else {}  # the envelope of a list
        out.document(outcome.counts | listed, lambda console: show(outcome.counts, console))
        return ExitCode.OK
    out.summary(outcome.as_item(), jobs.describe(outcome))
    return ExitCode.OK if outcome.status == "skipped" else ExitCode.FAILED


@main.group("jobs", invoke_without_command=True)
@options.json_option
@options.settings_options("jobs")
@click.pass_context
def jobs_group(ctx: click.Context, /, out: terminal.Output, **values: Any) -> None:
    """The periodic jobs `archiver run` hosts: schedule (cron, UTC), last run, status and next
    run. `jobs run NAME` runs one now, in this process, under the job's lease."""
    if ctx.invoked_subcommand is not None:
        return
    s = load_settings(values)
    found = run_db(s, lambda conn: jobs.views(conn, periodic.registered(s)))
    out.items([view.as_item() for view in found], jobs.COLUMNS, None, "no jobs")


@jobs_group.command("run")
@click.argument("name")
@options.json_option
@options.settings_options("jobs")
@click.pass_context
def jobs_run_command(ctx: click.Context, /, name: str, **_: Any) -> ExitCode:
    """Run job NAME now in this process, under its lease (skipped, exit 0, if a replica is
    running it); exit 1 if the run fails."""
    values = options.inherit(ctx)
    out: terminal.Output = values.pop("out")
    values.pop("name", None)
    s = load_settings({k: v for k, v in values.items() if k in settings.Settings.model_fields})
    periodic.named(s, name)  # an unknown name is a usage error, before connecting
    show = retention.render if name == "retention" else jobs.render_counts
    return _show_run(out, _run_job(s, name), show)


@main.command("partitions")
@options.json_option
@options.settings_options("partitions")
def partitions_command(out: terminal.Output, **values: Any) -> None:
    """The monthly partitions of conversation_history: bounds (UTC), size, estimated rows, and
    state (attached, or left by an interrupted drop)."""
    s = load_settings(values)
    found = run_db(s, partitions.listing)
    out.items([p.as_item() for p in found], partitions.COLUMNS, None, "no partitions")

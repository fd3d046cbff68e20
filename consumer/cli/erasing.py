"""Commands of erasure (the right to be forgotten): erase, erasures (consumer/erasure/)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from consumer import erasure, exceptions, settings, terminal
from consumer.cli import app, exits, options
from consumer.cli.exits import ExitCode

T = TypeVar("T")


def _subject(customer: str | None, user: str | None, conversation: str | None) -> tuple[str, str]:
    given = [(k, v) for k, v in (("customer", customer), ("user", user),
                                 ("conversation", conversation)) if v is not None]  # fmt: skip
    if len(given) != 1:
        raise exceptions.UsageError("give exactly one of --customer, --user and --conversation")
    kind, subject = given[0]
    if not subject:
        raise exceptions.UsageError(f"--{kind}: an id cannot be empty")
    return kind, subject


def _optional_subject(
    customer: str | None, user: str | None, conversation: str | None
) -> str | None:
    if customer is None and user is None and conversation is None:
        return None
    return _subject(customer, user, conversation)[1]


def _with_both(s: settings.Settings, work: Callable[[erasure.Surroundings], Awaitable[T]]) -> T:
    """`work` with PostgreSQL and Redis; connection failures name the URL to check."""

    async def opened() -> T:
        async with erasure.Surroundings.open(s) as where:
            return await work(where)

    flag = "--erasure-redis-url / ARCHIVER_ERASURE_REDIS_URL" if s.erasure_redis_url else None
    with (
        exits.reaching_postgres(s.database_url),
        exits.reaching_redis(s.erasure_redis, flag or "--redis-url / ARCHIVER_REDIS_URL"),
    ):
        return asyncio.run(opened())


def _counts_line(counts: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "nothing yet"


def _done(out: terminal.Output, e: erasure.Erasure) -> ExitCode:
    line = f"erasure {e.id} ({e.tenant_id}, {e.kind} {e.subject_hash[:16]}): {e.status}"
    out.summary(e.as_item(), f"{line}; {_counts_line(e.counts)}")
    return ExitCode.OK if e.status == "completed" else ExitCode.FAILED


async def _request_and_run(
    where: erasure.Surroundings, tenant: str, kind: str, subject: str, reason: str
) -> erasure.Erasure:
    async with where.pool.acquire() as conn:
        requested = await erasure.request(
            conn, where.settings.erasure_secret, tenant, kind, subject, reason
        )
    terminal.note(f"erasure {requested.id} requested; erasing")
    return await erasure.run(where, requested.id)


def _verified(out: terminal.Output, found: erasure.Verification) -> ExitCode:
    left = {k: v for k, v in found.places.items() if v}
    verdict = "nothing left" if found.ok else f"LEFT: {_counts_line(left)}"
    if found.erasure.status != "completed":
        verdict += f" (the erasure is {found.erasure.status}: resume it)"
    out.summary(found.as_item(), f"erasure {found.erasure.id}: {verdict}")
    return ExitCode.OK if found.ok else ExitCode.FAILED


@app.main.command("erase")
@click.option("--tenant", help="The subject's tenant.")
@click.option("--customer", help="Erase this customer (every conversation of theirs).")
@click.option("--user", help="Erase this user.")
@click.option("--conversation", help="Erase this conversation.")
@click.option("--reason", default="", help="Why (kept in the audit trail: never name the subject).")
@click.option("--dry-run", is_flag=True, help="Only count what would go, per place.")
@click.option("--resume", type=int, metavar="ID", help="Finish an interrupted erasure.")
@click.option("--verify", type=int, metavar="ID",
              help="Search every place for what is left of erasure ID; exit 1 if anything is.")  # fmt: skip
@options.json_option
@options.settings_options("erase")
def erase_command(
    tenant: str | None, customer: str | None, user: str | None, conversation: str | None,
    reason: str, dry_run: bool, resume: int | None, verify: int | None, out: terminal.Output,
    **values: Any,
) -> ExitCode:  # fmt: skip
    """Erase a customer, user or conversation of a tenant everywhere (Redis, PostgreSQL, dead
    letters, the cold tier), then print the erasure's id and counts per place; exit 1 unless
    it completed. Needs ARCHIVER_ERASURE_KEY. --verify ID of a completed erasure takes the
    subject again (--customer/--user/--conversation), checked against its keyed hash."""
    s = app.load_settings(values)
    if verify is not None:
        subject = _optional_subject(customer, user, conversation)
        return _verified(out, _with_both(s, lambda w: erasure.verify(w, verify, subject)))
    if resume is not None:
        return _done(out, _with_both(s, lambda w: erasure.run(w, resume)))
    if not tenant:
        raise exceptions.UsageError("give --tenant T (or --resume ID, or --verify ID)")
    kind, subject = _subject(customer, user, conversation)
    if dry_run:
        found = _with_both(s, lambda w: erasure.preview(w, tenant, kind, subject))
        out.summary({"dry_run": True, "left": found}, f"would erase: {_counts_line(found)}")
        return ExitCode.OK
    return _done(out, _with_both(s, lambda w: _request_and_run(w, tenant, kind, subject, reason)))


@app.main.command("erasures")
@options.page_options(default=50)
@options.json_option
@options.settings_options("erasures")
def erasures_command(limit: int, cursor: str | None, out: terminal.Output, **values: Any) -> None:
    """The audit trail of erasures, newest first: tenant, kind, the subject's keyed hash
    (never the subject), when requested, status, next step, counts."""
    s = app.load_settings(values)
    before = _cursor(cursor)
    found = app.run_db(s, lambda conn: erasure.listing(conn, limit + 1, before))
    more = str(found[limit - 1].id) if len(found) > limit else None
    out.items([e.as_item() for e in found[:limit]], erasure.COLUMNS, more, "no erasures")


def _cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not cursor.isdigit():
        raise exceptions.UsageError(f"--after: not a cursor of `archiver erasures`: {cursor!r}")
    return int(cursor)

"""Exit codes, and what an error means for the person who ran the command.

| code | meaning |
| ---: | --- |
| 0 | done |
| 1 | the command ran and its work failed or found nothing to act on |
| 2 | usage or configuration: a flag, an ARCHIVER_* variable, the schema or a privilege |
| 3 | Redis or PostgreSQL cannot be reached or refuses the connection |
| 130 | interrupted (Ctrl-C) |

`failure_of` turns any exception into a code and one line saying what to do; `reaching`
names the server a block talks to, so that a refused connection says which URL to check.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import asyncpg
import click
import redis.exceptions as redis_errors

from consumer import exceptions, urls


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    UNREACHABLE = 3
    INTERRUPTED = 130


@dataclass(frozen=True, slots=True)
class Failure:
    code: ExitCode
    message: str


POSTGRES_UNREACHABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.InterfaceError,
    asyncpg.ProtocolError,  # something that is not PostgreSQL answers at that address
)
REDIS_UNREACHABLE = (
    OSError,
    TimeoutError,
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.InvalidResponse,  # something that is not Redis answers at that address
)
SCHEMA_MISSING = (
    asyncpg.UndefinedTableError,
    asyncpg.UndefinedColumnError,
    asyncpg.UndefinedFunctionError,
)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


POSTGRES_REFUSED = (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidCatalogNameError)
REDIS_REFUSED = (redis_errors.AuthenticationError, redis_errors.AuthorizationError)
NOT_THE_SERVER = (asyncpg.ProtocolError, redis_errors.InvalidResponse)


def _unreachable_message(server: str, url: str, flag: str, exc: BaseException) -> str:
    where = f"{server} at {urls.redact(url)}"
    if isinstance(exc, POSTGRES_REFUSED + REDIS_REFUSED):
        return f"{where} refused the connection ({_reason(exc)}): check the user, password and database in {flag}"
    if isinstance(exc, NOT_THE_SERVER):
        return f"what answers at {urls.redact(url)} is not {server} ({_reason(exc)}): check {flag}"
    return f"cannot reach {where} ({_reason(exc)}): is it running? check {flag}"


@contextlib.contextmanager
def reaching_postgres(url: str) -> Iterator[None]:
    """Connection failures inside become UnreachableError naming --database-url."""
    try:
        yield
    except POSTGRES_UNREACHABLE as exc:
        raise exceptions.UnreachableError(
            _unreachable_message("PostgreSQL", url, "--database-url / ARCHIVER_DATABASE_URL", exc)
        ) from exc


@contextlib.contextmanager
def reaching_redis(url: str, flag: str = "--redis-url / ARCHIVER_REDIS_URL") -> Iterator[None]:
    """Connection failures inside become UnreachableError naming --redis-url (or `flag`)."""
    try:
        yield
    except redis_errors.NoPermissionError:
        raise
    except REDIS_UNREACHABLE as exc:
        raise exceptions.UnreachableError(_unreachable_message("Redis", url, flag, exc)) from exc


def failure_of(exc: BaseException) -> Failure | None:
    """The code and message for an error we understand; None for a bug (show a traceback)."""
    for kinds, code, explain in _KNOWN:
        if isinstance(exc, kinds):
            return Failure(code, explain(exc))
    return None


def _archiver(exc: BaseException) -> str:
    return str(exc)


def _schema(exc: BaseException) -> str:
    return f"the database has no archiver schema, or an older one ({_reason(exc)}): run `archiver migrate`"


def _privilege(exc: BaseException) -> str:
    return (
        f"PostgreSQL refused an operation to this user ({_reason(exc)}): `archiver migrate` runs"
        " as the schema's owner, the other commands as a role holding archiver_writer"
        " (ops/OPERATIONS.md, PostgreSQL roles)"
    )


def _acl(exc: BaseException) -> str:
    return f"Redis refused a command to this user ({_reason(exc)}): see ops/redis-acl.conf"


def _click(exc: BaseException) -> str:
    return exc.format_message() if isinstance(exc, click.ClickException) else str(exc)


def _unreachable(exc: BaseException) -> str:
    module = type(exc).__module__
    if module.startswith("asyncpg"):
        return f"PostgreSQL refused or dropped the connection ({_reason(exc)}): check --database-url / ARCHIVER_DATABASE_URL"
    if module.startswith("redis"):
        return f"Redis refused or dropped the connection ({_reason(exc)}): check --redis-url / ARCHIVER_REDIS_URL"
    return f"a server could not be reached ({_reason(exc)}): check --redis-url and --database-url"


def _interrupted(exc: BaseException) -> str:
    return "interrupted"


_USAGE_ERRORS = (
    exceptions.ConfigError,
    exceptions.MigrationError,
    exceptions.UsageError,
)
Kinds = type[BaseException] | tuple[type[BaseException], ...]
_KNOWN: tuple[tuple[Kinds, ExitCode, Callable[[BaseException], str]], ...] = (
    (click.ClickException, ExitCode.USAGE, _click),
    (_USAGE_ERRORS, ExitCode.USAGE, _archiver),
    (exceptions.UnreachableError, ExitCode.UNREACHABLE, _archiver),
    (exceptions.ArchiverError, ExitCode.FAILED, _archiver),
    (SCHEMA_MISSING, ExitCode.USAGE, _schema),
    (asyncpg.InsufficientPrivilegeError, ExitCode.USAGE, _privilege),
    (redis_errors.NoPermissionError, ExitCode.USAGE, _acl),
    (REDIS_UNREACHABLE + POSTGRES_UNREACHABLE, ExitCode.UNREACHABLE, _unreachable),
    ((KeyboardInterrupt, click.Abort), ExitCode.INTERRUPTED, _interrupted),
)

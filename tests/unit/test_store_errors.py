"""Which failures may dead-letter a checkpoint: only data PostgreSQL refuses, by SQLSTATE class."""

from __future__ import annotations

import asyncpg

from consumer import store


def test_only_data_errors_may_dead_letter() -> None:
    data = [asyncpg.InvalidTextRepresentationError, asyncpg.UniqueViolationError,
            asyncpg.ProgramLimitExceededError, asyncpg.CharacterNotInRepertoireError]  # fmt: skip
    infrastructure = [
        asyncpg.DiskFullError, asyncpg.LockNotAvailableError, asyncpg.QueryCanceledError,
        asyncpg.AdminShutdownError, asyncpg.SerializationError, asyncpg.DeadlockDetectedError,
        asyncpg.ReadOnlySQLTransactionError, asyncpg.InsufficientPrivilegeError,
        asyncpg.UndefinedTableError, asyncpg.InternalServerError, asyncpg.exceptions.PostgresIOError,
        asyncpg.OutOfMemoryError, asyncpg.ObjectInUseError, asyncpg.CrashShutdownError,
    ]  # fmt: skip
    for kind in data:
        assert store.is_data_error(kind()) and not store.is_transient(kind()), kind
    for kind in infrastructure:
        assert store.is_transient(kind()) and not store.is_data_error(kind()), kind
    for failure in (ConnectionResetError(), TimeoutError(), asyncpg.InterfaceError("closed")):
        assert store.is_transient(failure)
    assert not store.is_transient(ValueError("a bug of ours is not an outage"))


def test_asyncpg_refusing_to_encode_a_value_is_a_data_error() -> None:
    refused = asyncpg.exceptions._base.DataError("invalid input for query argument $1")
    assert store.is_data_error(refused) and not store.is_transient(refused)


def test_read_only_is_recognised_for_reconnecting() -> None:
    assert store.is_read_only(asyncpg.ReadOnlySQLTransactionError())
    assert not store.is_read_only(asyncpg.DiskFullError())

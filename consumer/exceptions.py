"""The one exception hierarchy of the archiver; a subclass's docstring is its default message."""

from __future__ import annotations


class ArchiverError(Exception):
    """The archiver failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(ArchiverError):
    """The configuration is invalid."""


class DecodeError(ArchiverError):
    """The checkpoint payload cannot be decoded or validated."""


class MigrationError(ArchiverError):
    """The database schema cannot be migrated."""


class PendingMigrationsError(MigrationError):
    """The database has pending migrations: run `archiver migrate`."""


class StoreUnavailableError(ArchiverError):
    """PostgreSQL failed moments ago: held without trying again yet."""


class UsageError(ArchiverError):
    """The command cannot run as given: see its --help."""


class NotFoundError(ArchiverError):
    """Nothing in the archive matches."""


class UnreachableError(ArchiverError):
    """A server the command needs cannot be reached or refuses the connection."""


class NotReadyError(ArchiverError):
    """The checkpoint is still being written: try again shortly (never a dead letter)."""

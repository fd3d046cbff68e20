"""Private Redis and PostgreSQL servers for the test suite: they live in consumer.embedded
(`archiver demo` uses them too); this module keeps the tests' import path."""

# ruff: noqa: F405

from __future__ import annotations

from consumer.embedded import *  # noqa: F403

__all__ = [
    "PostgresServer",
    "RedisServer",
    "ServerBinaryNotFoundError",
    "create_database",
    "descendants",
    "drop_database",
    "free_port",
    "pid_alive",
    "pid_runs",
    "quote_ident",
    "server_user_can_reach",
    "session_members",
    "stop_process",
    "wait_until",
]

"""Private Redis and PostgreSQL servers for the test suite: they live in consumer.demo.embedded
(`archiver demo` uses them too); this module keeps the tests' import path, and adds Redis Stack
(RedisJSON + RediSearch, for the langgraph-redis source) from ops/redisstack.py's cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from consumer.demo.embedded import *  # noqa: F403 - the tests' import path, re-exported whole
from consumer.demo.embedded import RedisServer, ServerBinaryNotFoundError
from consumer.demo.embedded import __all__ as _embedded
from ops import redisstack

__all__ = [*_embedded, "redis_stack"]


def redis_stack(workdir: Path, **options: Any) -> RedisServer:
    """A private Redis Stack server; fails (never skips) when it has not been fetched."""
    if not redisstack.present():
        raise ServerBinaryNotFoundError(
            f"Redis Stack is not in {redisstack.CACHE}: run `make test-servers`"
            " (python -m ops.redisstack fetches it)"
        )
    return RedisServer(workdir, binary=redisstack.server(), modules=redisstack.modules(), **options)

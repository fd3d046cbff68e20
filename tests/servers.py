"""Private Redis and PostgreSQL servers for the test suite: they live in consumer.demo.embedded
(`archiver demo`, `make bench` and `make faults` use them too); this module keeps the tests'
import path, and adds Redis Stack (RedisJSON + RediSearch, for the langgraph-redis source) from
ops/redisstack.py's cache."""

from __future__ import annotations

from consumer.demo.embedded import *  # noqa: F403 - the tests' import path, re-exported whole
from consumer.demo.embedded import __all__ as _embedded
from ops.redisstack import redis_server as redis_stack

__all__ = [*_embedded, "redis_stack"]

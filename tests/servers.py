"""Private Redis and PostgreSQL servers for the test suite: they live in consumer.demo.embedded
(`archiver demo` uses them too); this module keeps the tests' import path."""

from __future__ import annotations

from consumer.demo.embedded import *  # noqa: F403 - the tests' import path, re-exported whole
from consumer.demo.embedded import __all__ as __all__

"""What the workload wrote: every checkpoint version and every message identity in it.

The identity of a message is what consumer/codecs.py derives for it: every workload message
carries an explicit `id`, so its identity is "id:<id>"; a conversation summary's identity is
"summary:" + the first 32 hex digits of the SHA-256 of its text. A message's row identity in
PostgreSQL is (tenant_id, conversation_id, identity).
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

Identity = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class Version:
    """One value written under a checkpoint key; `good` if the archiver must decode it. A
    value too large to keep here (`oversized`) is kept as its first bytes, size and SHA-1."""

    key: str
    raw: bytes
    identities: frozenset[Identity]
    good: bool
    mode: str = ""
    at: float = 0.0
    size: int = -1  # of the whole value, when `raw` holds only its first bytes
    sha1: str = ""  # of the whole value, likewise

    @property
    def oversized(self) -> bool:
        return self.size >= 0

    @property
    def digest(self) -> str:
        return self.sha1 or digest(self.raw)


def digest(raw: bytes) -> str:
    return hashlib.sha1(raw, usedforsecurity=False).hexdigest()


def expected_content(value: object) -> str:
    """The text the archiver stores for a message's `content` (codecs._content)."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def summary_identity(text: str) -> str:
    return "summary:" + hashlib.sha256(text.encode()).hexdigest()[:32]


def identities_of(doc: dict[str, Any]) -> dict[Identity, str]:
    """Identity -> expected message_content for every message of a checkpoint document."""
    tenant, conversation = str(doc["tenant_id"]), str(doc["conversation_id"])
    found = {
        (tenant, conversation, f"id:{m['id']}"): expected_content(m["content"])
        for m in doc["messages"]
    }
    summary = doc.get("conversation_summary")
    if summary:
        found[(tenant, conversation, summary_identity(summary))] = summary
    return found


@dataclass(slots=True)
class Ledger:
    """The oracle's record: filled in only once a write is acknowledged by Redis."""

    contents: dict[Identity, str] = field(default_factory=dict)
    versions: dict[str, list[Version]] = field(default_factory=dict)
    where: dict[Identity, set[str]] = field(default_factory=dict)
    modes: Counter[str] = field(default_factory=Counter)

    def record(self, key: str, raw: bytes, doc: dict[str, Any] | None, mode: str) -> Version:
        """Record an acknowledged write; `doc` is None for a payload meant to be dead-lettered."""
        found = identities_of(doc) if doc is not None else {}
        for identity, content in found.items():
            self.contents.setdefault(identity, content)
            self.where.setdefault(identity, set()).add(key)
        version = Version(key, raw, frozenset(found), doc is not None, mode, time.time())
        self.versions.setdefault(key, []).append(version)
        self.modes[mode] += 1
        return version

    def record_oversized(self, key: str, head: bytes, size: int, sha1: str) -> Version:
        """An acknowledged write of a value over the archiver's limit (built in Redis in
        chunks: never whole here); it must be dead-lettered as its first bytes."""
        version = Version(key, head, frozenset(), False, "oversized", time.time(), size, sha1)
        self.versions.setdefault(key, []).append(version)
        self.modes["oversized"] += 1
        return version

    def version(self, key: str, raw: bytes | None) -> Version | None:
        """The recorded version of `key` holding exactly `raw`, if any."""
        if raw is None:
            return None
        for version in self.versions.get(key, ()):
            if version.raw == raw:
                return version
        return None

    def latest(self, key: str) -> Version | None:
        found = self.versions.get(key)
        return found[-1] if found else None

    def history(self) -> dict[str, list[tuple[str, float]]]:
        """key -> [(write mode, unix time)] of its versions: for investigating a failure."""
        return {k: [(v.mode, round(v.at, 3)) for v in vs] for k, vs in self.versions.items()}

    @property
    def keys(self) -> list[str]:
        return list(self.versions)

    @property
    def checkpoints_written(self) -> int:
        return sum(len(v) for v in self.versions.values())

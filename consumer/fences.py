"""The no-resurrection fence of the archive path, and the keyed hash that names an erased
subject (consumer/erasure/ does the erasing).

A subject is (tenant, kind, id), kind one of customer, user, conversation; it is named by
HMAC-SHA256 with ARCHIVER_ERASURE_KEY of "tenant NUL kind NUL id" (hex), never in clear.

`apply` runs first in every archive transaction (store.Store.write): it asks
archiver_erasure_fence (sql/0006_erasure.sql) for the batch's subjects that have an erasure,
taking the erasure lock in shared mode, and drops every message stamped at or before its
subject's requested_at (counted as erased, never inserted). A checkpoint left with no message
is dropped whole: its conversation row is not written either. Messages stamped after
requested_at (the subject came back) are archived normally.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import hmac
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import structlog

from consumer import exceptions, metrics, model, queries

log = structlog.get_logger("consumer.fences")

KINDS = ("customer", "user", "conversation")


def subject_hash(key: bytes, tenant: str, kind: str, subject: str) -> str:
    """The keyed hash that stands for a subject in the audit trail, logs and the fence."""
    message = "\x00".join((tenant, kind, subject)).encode("utf-8", "surrogateescape")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


@functools.lru_cache(maxsize=65536)  # a conversation's checkpoints repeat the same ids
def _cached_hash(key: bytes, tenant: str, kind: str, subject: str) -> str:
    return subject_hash(key, tenant, kind, subject)


Subject = tuple[str, str, str]  # tenant, kind, keyed hash


def subjects_of(c: model.Checkpoint, key: bytes) -> list[Subject]:
    """The fenceable subjects a checkpoint belongs to."""
    found = [(c.tenant_id, "conversation", _cached_hash(key, c.tenant_id, "conversation",
                                                         c.conversation_id))]  # fmt: skip
    if c.customer_id:
        found.append((c.tenant_id, "customer", _cached_hash(key, c.tenant_id, "customer",
                                                            c.customer_id)))  # fmt: skip
    if c.user_id:
        found.append((c.tenant_id, "user", _cached_hash(key, c.tenant_id, "user", c.user_id)))
    return found


@dataclasses.dataclass(frozen=True, slots=True)
class Fenced:
    """What of a batch may be inserted, and how many messages the fence refused."""

    kept: list[model.Checkpoint]
    erased: int


async def apply(conn: Any, batch: Sequence[model.Checkpoint], key: bytes | None) -> Fenced:
    """Take the erasure lock (shared) and drop what erasures fence off; in the batch's
    transaction, before anything is written. Without a key, a batch of a tenant that has any
    erasure raises ConfigError (the archive path then holds it in Redis)."""
    tenants = sorted({c.tenant_id for c in batch})
    if key is None:
        rows = await conn.fetch(queries.get("erasure_fence"), tenants, None, None)
        if rows:
            raise exceptions.ConfigError(
                "ARCHIVER_ERASURE_KEY is not set and a tenant of this batch has erasures: the"
                " batch is held in Redis until the archiver has the key"
            )
        return Fenced(list(batch), 0)
    wanted = {s for c in batch for s in subjects_of(c, key)}
    columns = [list(column) for column in zip(*sorted(wanted), strict=True)] or [[], [], []]
    rows = await conn.fetch(queries.get("erasure_fence"), *columns)
    if not rows:
        return Fenced(list(batch), 0)
    cutoffs = {(r["tenant_id"], r["kind"], r["subject_hash"]): r["requested_at"] for r in rows}
    return _cut(batch, cutoffs, key)


def _cut(batch: Sequence[model.Checkpoint], cutoffs: dict[Subject, datetime], key: bytes) -> Fenced:
    kept, erased = [], 0
    for c in batch:
        stamps = [cutoffs[s] for s in subjects_of(c, key) if s in cutoffs]
        if not stamps:
            kept.append(c)
            continue
        cutoff = max(stamps)
        later = tuple(m for m in c.messages if m.timestamp > cutoff)
        erased += len(c.messages) - len(later)
        if not later:  # nothing left (an empty checkpoint too): its conversation row neither
            continue
        if len(later) == len(c.messages):
            kept.append(c)
        else:
            kept.append(dataclasses.replace(c, messages=later))
    metrics.ERASED.inc(erased)
    log.info("batch.fenced", erased_messages=erased, checkpoints=len(batch) - len(kept))
    return Fenced(kept, erased)

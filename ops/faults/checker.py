"""The oracle: compare what the workload wrote with what PostgreSQL and Redis hold at the end.

Kafka-Connect/Jepsen style: the verdict comes from the ledger of acknowledged writes and the
final state, never from the archiver's own counters.

* archived: a written identity with at least one row in conversation_history;
* dead-lettered: a written checkpoint version whose exact raw bytes are in
  archive_dead_letters under its key (a message of such a version is covered); for a value
  over the archiver's limit, its first bytes, with the size and SHA-1 of the whole;
* pending: not archived nor covered, but a version holding it is still in Redis;
* lost: written, never archived or dead-lettered, and gone from Redis;
* duplicated: rows beyond one per (tenant_id, conversation_id, message_key).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import asyncpg
import redis.asyncio as aioredis

from consumer import keys
from ops.faults.ledger import Identity, Ledger, Version, digest

ROWS_SQL = (
    "SELECT tenant_id, conversation_id, message_key, message_content FROM conversation_history"
    " WHERE NOT (tenant_id = ANY($1::text[]))"
)
DEAD_SQL = "SELECT source_key, raw, digest, size, truncated FROM archive_dead_letters"
EXAMPLES = 5


@dataclass(slots=True)
class Verdict:
    written_messages: int = 0
    archived_messages: int = 0
    dead_lettered_checkpoints: int = 0
    lost: int = 0
    duplicated: int = 0
    pending: int = 0
    unexpected_rows: int = 0
    content_mismatches: int = 0
    bad_checkpoints_written: int = 0
    bad_checkpoints_lost: int = 0
    good_checkpoints_dead_lettered: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not (
            self.lost
            or self.duplicated
            or self.pending
            or self.unexpected_rows
            or self.content_mismatches
            or self.bad_checkpoints_lost
            or self.good_checkpoints_dead_lettered
        )

    def example(self, kind: str, what: object) -> None:
        found = self.examples.setdefault(kind, [])
        if len(found) < EXAMPLES:
            found.append(repr(what)[:300])

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class FinalState:
    rows: Mapping[Identity, list[str]]
    dead: frozenset[tuple[str, str]]
    present: Mapping[str, bytes | None]


async def gather(
    database_url: str,
    client: aioredis.Redis,
    ledger: Ledger,
    ignored: Iterable[str] = (),
    conversations: Collection[tuple[str, str]] = (),
) -> FinalState:
    """The final state; rows of `ignored` tenants (put there by the scenario) and of
    `conversations` (tenant, id: erased by the scenario) are left out."""
    conn = await asyncpg.connect(database_url, timeout=30)
    try:
        rows: dict[Identity, list[str]] = {}
        for r in await conn.fetch(ROWS_SQL, list(ignored), timeout=300):
            if (r["tenant_id"], r["conversation_id"]) in conversations:
                continue
            identity = (r["tenant_id"], r["conversation_id"], r["message_key"])
            rows.setdefault(identity, []).append(r["message_content"])
        dead = frozenset(_dead_letter(r, ledger) for r in await conn.fetch(DEAD_SQL))
    finally:
        await conn.close()
    return FinalState(rows, dead, await present_values(client, ledger))


def forget(ledger: Ledger, layout: keys.Layout, conversations: Collection[tuple[str, str]]) -> None:
    """Leave conversations (tenant, id) the scenario erased out of the ledger: their messages,
    and the checkpoint keys of their ids (whatever a value's tenant: the key names none)."""
    gone = {identity for identity in ledger.contents if identity[:2] in conversations}
    for identity in gone:
        ledger.contents.pop(identity, None)
        ledger.where.pop(identity, None)
    ids = {conversation for _, conversation in conversations}
    for key in list(ledger.versions):
        info = layout.parse(key)
        if info is not None and keys.for_storage(info.conversation_id) in ids:
            del ledger.versions[key]


def _dead_letter(row: asyncpg.Record, ledger: Ledger) -> tuple[str, str]:
    """(key, SHA-1 of the whole value) of a dead letter, checked against the ledger: a whole
    value by its raw bytes; a truncated one by size, SHA-1 and its first bytes."""
    key, raw = row["source_key"], bytes(row["raw"])
    if not row["truncated"]:
        return key, digest(raw)
    for version in ledger.versions.get(key, ()):
        if (version.size, version.sha1) == (row["size"], row["digest"]) and (
            version.raw.startswith(raw) and raw
        ):
            return key, version.digest
    return key, "unmatched:" + row["digest"]


async def present_values(client: aioredis.Redis, ledger: Ledger) -> dict[str, bytes | None]:
    """Each key's value still in Redis; an oversized one (never read whole here) as its
    recorded first bytes if it still has its size."""
    huge = {k: vs[-1] for k, vs in ledger.versions.items() if vs[-1].oversized}
    keys = [k for k in ledger.keys if k not in huge]
    found: dict[str, bytes | None] = {}
    for start in range(0, len(keys), 1000):
        chunk = keys[start : start + 1000]
        values = cast(list[bytes | None], await client.mget(chunk))
        found.update(zip(chunk, values, strict=True))
    for key, version in huge.items():
        found[key] = version.raw if await client.strlen(key) == version.size else None
    return found


def check(ledger: Ledger, state: FinalState) -> Verdict:
    verdict = Verdict(written_messages=len(ledger.contents))
    _check_rows(ledger, state, verdict)
    _check_dead_letters(ledger, state, verdict)
    for identity in ledger.contents:
        if identity not in state.rows:
            _unarchived(identity, ledger, state, verdict)
    return verdict


def _check_rows(ledger: Ledger, state: FinalState, verdict: Verdict) -> None:
    for identity, contents in state.rows.items():
        expected = ledger.contents.get(identity)
        if len(contents) > 1:
            verdict.duplicated += len(contents) - 1
            verdict.example("duplicated", identity)
        if expected is None:
            verdict.unexpected_rows += len(contents)
            verdict.example("unexpected", identity)
            continue
        verdict.archived_messages += 1
        if any(c != expected for c in contents):
            verdict.content_mismatches += 1
            verdict.example("content", identity)


def _versions(ledger: Ledger) -> Iterable[Version]:
    for versions in ledger.versions.values():
        yield from versions


def _check_dead_letters(ledger: Ledger, state: FinalState, verdict: Verdict) -> None:
    lettered = {(v.key, v.digest): v for v in _versions(ledger)}
    for entry in state.dead:
        version = lettered.get(entry)
        if version is None:
            continue
        verdict.dead_lettered_checkpoints += 1
        if version.good:
            verdict.good_checkpoints_dead_lettered += 1
            verdict.example("good_dead_lettered", version.key)
    for version in _versions(ledger):
        if version.good:
            continue
        verdict.bad_checkpoints_written += 1
        letter = (version.key, version.digest)
        if letter not in state.dead and state.present.get(version.key) != version.raw:
            verdict.bad_checkpoints_lost += 1
            verdict.example("bad_lost", version.key)


def _unarchived(identity: Identity, ledger: Ledger, state: FinalState, verdict: Verdict) -> None:
    holders = [
        v
        for key in ledger.where.get(identity, ())
        for v in ledger.versions[key]
        if identity in v.identities
    ]
    if any((v.key, v.digest) in state.dead for v in holders):
        return
    if any(state.present.get(v.key) == v.raw for v in holders):
        verdict.pending += 1
        verdict.example("pending", identity)
        return
    verdict.lost += 1
    verdict.example("lost", (identity, sorted({v.key for v in holders})))


def work_counts(events: Iterable[dict[str, Any]], ledger: Ledger) -> dict[str, Any]:
    """Archive work from the archivers' JSON logs: `checkpoint.archived` lines per key, against
    the versions written under it (a key rewritten n times may rightly be archived n+1 times).
    """
    archived: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for event in events:
        name = str(event.get("event", ""))
        kinds[name] += 1
        if name == "checkpoint.archived":
            archived[str(event.get("key"))] += 1
    extra = {
        key: n - len(ledger.versions.get(key, ()))
        for key, n in archived.items()
        if n > len(ledger.versions.get(key, ()))
    }
    return {
        "archived_events": sum(archived.values()),
        "keys_archived": len(archived),
        "duplicate_work": sum(extra.values()),
        "duplicate_work_examples": sorted(extra)[:EXAMPLES],
        "changed_events": kinds["checkpoint.changed"],
        "dead_lettered_events": kinds["checkpoint.dead_lettered"],
        "batch_failed_events": kinds["batch.failed"],
        "batch_error_events": kinds["batch.error"],
        "hold_exhausted_events": kinds["checkpoint.hold_exhausted"],
        "unreadable_events": kinds["checkpoint.unreadable"],
        "subscription_lost_events": kinds["subscription.lost"],
        "sweeps_completed": kinds["sweep.completed"],
        "task_died_events": kinds["consumer.task_died"],
    }

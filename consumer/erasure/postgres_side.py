"""An erasure's PostgreSQL step: the subject's rows of conversation_history (in batches, through
archiver_erase_history), its conversation rows (removed, or settled if messages written after
the erasure remain), and the dead letters that hold it (decoded; undecodable ones matched by
the subject's bytes). Also the read-only counts `--verify` and `--dry-run` report."""

from __future__ import annotations

from typing import Any

from consumer import fences, queries
from consumer.erasure import subjects

DEAD_LETTER_PAGE = 200  # dead letters decoded per query (each may be large)


async def conversations_of(conn: Any, tenant: str, kind: str, subject: str) -> set[str]:
    """The conversations a customer or user has in the archive (a conversation: itself)."""
    if kind == "conversation":
        return {subject}
    rows = await conn.fetch(queries.get(f"erasure_conversations_of_{kind}"), tenant, subject)
    return {r["conversation_id"] for r in rows}


async def fence_conversations(
    conn: Any, key: bytes, erasure_id: int, subject: subjects.Subject, found: set[str]
) -> None:
    """Fence off `found` conversations for this erasure (under the erasure lock: batches in
    flight commit first, later ones see the fences)."""
    hashes = [fences.subject_hash(key, subject.tenant, "conversation", c) for c in sorted(found)]
    await conn.execute(queries.get("erasure_lock"))
    await conn.execute(
        queries.get("erasure_fences_insert"), subject.tenant, ["conversation"] * len(hashes),
        hashes, erasure_id, subject.requested_at,
    )  # fmt: skip


async def erase_rows(conn: Any, erasure_id: int, subject: subjects.Subject, batch: int) -> int:
    """Delete the subject's messages, one short transaction per batch; how many went."""
    total = 0
    conversations = sorted(subject.conversation_ids)
    while True:
        gone: int = await conn.fetchval(
            queries.get("erasure_history_delete"), erasure_id, subject.id, conversations, batch
        )
        total += gone
        if gone == 0:
            return total


async def settle(conn: Any, subject: subjects.Subject) -> dict[str, int]:
    """The subject's conversation rows: removed where no message is left."""
    conversations = sorted(subject.conversation_ids)
    row = await conn.fetchrow(
        queries.get("erasure_settle"), [subject.tenant] * len(conversations), conversations
    )
    return {"conversations_removed": row["removed"], "conversations_updated": row["updated"]}


async def dead_letters(conn: Any, subject: subjects.Subject, reader: subjects.Reader) -> list[int]:
    """Ids of the dead letters that hold the subject."""
    found: list[int] = []
    after = 0
    while True:
        rows = await conn.fetch(queries.get("erasure_dead_letters_page"), after, DEAD_LETTER_PAGE)
        if not rows:
            return found
        for r in rows:
            raw = bytes(r["raw"])
            if reader.belongs(subject, r["source_key"], raw, whole=not r["truncated"]):
                found.append(r["id"])
        after = rows[-1]["id"]


async def erase_dead_letters(conn: Any, erasure_id: int, ids: list[int]) -> int:
    if not ids:
        return 0
    gone: int = await conn.fetchval(queries.get("erasure_dead_letters_delete"), erasure_id, ids)
    return gone


async def left(conn: Any, subject: subjects.Subject, reader: subjects.Reader) -> dict[str, int]:
    """What of the subject PostgreSQL still holds, per place, by independent queries."""
    customer = subject.id if subject.kind == "customer" else None
    user = subject.id if subject.kind == "user" else None
    conversations = sorted(subject.conversation_ids)
    history = await conn.fetchval(
        queries.get("erasure_left_history"),
        subject.tenant, subject.requested_at, conversations, customer, user,
    )  # fmt: skip
    rows = await conn.fetchval(
        queries.get("erasure_left_conversations"),
        subject.tenant, customer, user, conversations, subject.requested_at,
    )  # fmt: skip
    found = {
        "conversation_history": history,
        "conversations": rows,
        "archive_dead_letters": len(await dead_letters(conn, subject, reader)),
    }
    for r in await conn.fetch(queries.get("erasure_left_elsewhere"), subject.id):
        found[r["place"]] = r["n"]
    return found

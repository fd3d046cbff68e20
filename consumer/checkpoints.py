"""The Redis side of the archive path: claim, compare-and-delete, arm, hold, the sweeper's
pages and lock, all pipelined.

Each operation takes many keys and costs one round trip; the Lua scripts live in consumer/lua.
What a checkpoint key is, how its value is read and compared, where its time comes from and
whether it is deleted once archived is the source's (consumer/sources).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, NamedTuple, cast

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from consumer import keys, model, sources
from consumer.sources import langgraph_redis

Redis = aioredis.Redis


@cache
def lua(name: str) -> str:
    source: str = (resources.files("consumer") / "lua" / f"{name}.lua").read_text(encoding="utf-8")
    return source


def digest(value: bytes) -> str:
    """What finish.lua compares: the SHA-1 of the archived value (Redis's redis.sha1hex)."""
    return hashlib.sha1(value, usedforsecurity=False).hexdigest()


class Fingerprint(NamedTuple):
    """What compare-and-delete (finish.lua) and hold.lua check a value against: the SHA-1 of
    the whole value (head 0), or, for an oversized value that is never read whole, its size
    and the SHA-1 of its first `head` bytes."""

    sha1: str
    size: int = -1
    head: int = 0


def fingerprint(value: bytes) -> Fingerprint:
    return Fingerprint(digest(value))


@dataclass(frozen=True, slots=True)
class Timing:
    """The windows and limits the scripts need, in milliseconds and bytes."""

    buffer_ms: int
    archive_after_ms: int
    lease_ms: int
    hold_ms: int  # a claimed checkpoint lives at least this long (unless its hold ran out)
    extend_ms: int = 0  # a hold keeps a checkpoint this much longer (buffer + sweep interval)
    max_hold_ms: int = 0
    max_payload: int = 64 * 1024 * 1024
    batch_bytes: int = 16 * 1024 * 1024

    @property
    def hold_span_ms(self) -> int:
        """How long after its first hold a checkpoint may still be held."""
        return self.buffer_ms + self.max_hold_ms


class Finished(NamedTuple):
    """Outcome of compare-and-delete for one key: 1 deleted, 0 changed since, -1 gone."""

    key: str
    result: int


class Oversized(NamedTuple):
    """What is kept of a value over ARCHIVER_MAX_PAYLOAD: its first bytes, its size and the
    SHA-1 of the whole value (read in chunks, never whole)."""

    head: bytes
    size: int
    sha1: str


SCRIPTS = (
    "claim", "finish", "arm", "hold", "release", "renew", "take_due", "classify", "schedule",
    "stamp_sweep", "sweep_age", "delete_thread",
)  # fmt: skip
CHUNK = 500  # checkpoints per script call: bounds how long one call blocks Redis
READ_CHUNK = 4 * 1024 * 1024  # bytes per GETRANGE when an oversized value is digested


def _chunks(items: Sequence[Any]) -> list[Sequence[Any]]:
    return [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]


class Checkpoints:
    """Scripted operations on many checkpoint keys and their companions at once.

    Each script takes a batch of checkpoints (one call per CHUNK keys): one round trip and
    one command to encode instead of one per key. Under Redis Cluster a batch must first be
    split by hash slot (our companion keys share their checkpoint's slot).

    Every time the scripts compare comes from Redis's clock (TIME), never from this host's:
    archivers on hosts whose clocks disagree with Redis's, or with each other, still agree on
    what is due, and a hold or claim never shortens a TTL.
    """

    def __init__(
        self, client: Redis, layout: keys.Layout, timing: Timing, source: sources.Source
    ) -> None:
        self.client = client
        self.layout = layout
        self.timing = timing
        self.source = source
        self._keep = "0" if source.deletes else "1"
        self._scripts: dict[str, AsyncScript] = {
            name: client.register_script(lua(name)) for name in SCRIPTS
        }

    def script(self, name: str) -> AsyncScript:
        return self._scripts[name]

    async def load_scripts(self) -> None:
        """Load every script into Redis now, not on the first batch's NOSCRIPT reply."""
        async with self.client.pipeline(transaction=False) as pipe:
            for script in self._scripts.values():
                pipe.script_load(script.script)
            await pipe.execute()

    def written_ms(self, batch: Sequence[str]) -> list[int]:
        """Each key's write time, by its source (ms since the epoch; -1 if it has none): the
        scripts compare it with Redis's clock for checkpoints that carry no TTL."""
        return [self.source.written_ms(key) for key in batch]

    async def _run(self, name: str, batches: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """Run a script once per batch, pipelined; replies concatenated in order."""
        async with self.client.pipeline(transaction=False) as pipe:
            for keys_, args in batches:
                await self.script(name)(keys=keys_, args=args, client=pipe)
            replies = await pipe.execute()
        return [reply for batch in replies for reply in batch]

    async def claim(self, requests: Sequence[str], token: str, due_ms: int) -> list[model.Claim]:
        """Claim each due key (one round trip) while the values claimed stay within the batch's
        byte budget; keys not due get their shadow re-armed, due ones over the budget come back
        DEFERRED, values over ARCHIVER_MAX_PAYLOAD come back OVERSIZED (claimed, not read)."""
        t, layout = self.timing, self.layout
        chunks = _chunks(requests)
        budget = max(1, t.batch_bytes // max(1, len(chunks)))
        head = [token, t.lease_ms, t.hold_ms, due_ms, t.buffer_ms, t.archive_after_ms]
        head += [t.max_payload, budget, t.hold_span_ms, self.source.reader, self._keep]
        batches = [
            (
                [
                    k for key in chunk
                    for k in (key, layout.claim(key), layout.shadow(key), layout.held(key))
                ],
                head + self.written_ms(chunk),
            )
            for chunk in chunks
        ]  # fmt: skip
        replies = await self._run("claim", batches) if requests else []
        return [_claim_of(key, reply) for key, reply in zip(requests, replies, strict=True)]

    async def finish(self, done: Sequence[tuple[str, Fingerprint]], token: str) -> list[Finished]:
        """Compare-and-delete each (key, fingerprint) and drop it from the deadline index."""
        layout, batches = self.layout, []
        for chunk in _chunks(done):
            keys_ = [
                k for key, _ in chunk
                for k in (key, layout.shadow(key), layout.claim(key), layout.held(key))
            ]  # fmt: skip
            args: list[Any] = [token, self.source.reader, self._keep]
            for _, mark in chunk:
                args += mark
            batches.append((keys_, args))
        replies = await self._run("finish", batches) if done else []
        await self.unschedule([key for (key, _), r in zip(done, replies, strict=True) if r != 0])
        finished = [Finished(key, int(r)) for (key, _), r in zip(done, replies, strict=True)]
        await self.delete_threads(
            [(key, mark) for (key, mark), f in zip(done, finished, strict=True) if f.result == 1]
        )
        return finished

    async def delete_threads(self, archived: Sequence[tuple[str, Fingerprint]]) -> dict[str, int]:
        """Delete the whole thread of each archived checkpoint its source deletes with its thread
        (consumer/lua/delete_thread.lua), if it is its thread's latest: key -> 1 deleted, 0 moved
        on (kept: the new latest deletes it), 2 another root checkpoint is not archived yet or
        3 it changed since (kept, archived and tried again in a claim lease), -1 gone."""
        threads = {k: t for k, _ in archived if (t := self.source.thread_of(k)) is not None}
        latest = set(await self._still_latest(threads)) if threads else set()
        wanted = {k: (threads[k], mark) for k, mark in archived if k in latest}
        if not wanted:
            return {}
        listed = await self._thread_keys([t for t, _ in wanted.values()])
        results = {}
        for (key, (thread, mark)), (found, writes) in zip(wanted.items(), listed, strict=True):
            results[key] = await self._delete_thread(key, thread, mark, found, writes)
        return results

    async def _thread_keys(
        self, threads: Sequence[langgraph_redis.ThreadOf]
    ) -> list[tuple[list[str] | None, list[str]]]:
        """Per thread: the keys its indexes list (None if they could not list them all: an
        index missing, or more than THREAD_KEYS_MAX keys; that thread is kept), and the
        members of the archived checkpoint's write index."""
        limit = langgraph_redis.THREAD_KEYS_MAX
        async with self.client.pipeline(transaction=False) as pipe:
            for thread in threads:
                for index in langgraph_redis.INDEXES:
                    pipe.execute_command(
                        "FT.SEARCH", index, thread.query, "NOCONTENT", "LIMIT", 0, limit,
                        "DIALECT", 2,
                    )  # fmt: skip
                pipe.zrange(thread.writes_index, 0, -1)
            replies = await pipe.execute(raise_on_error=False)
        per = len(langgraph_redis.INDEXES) + 1
        listed = []
        for at in range(0, len(replies), per):
            searched = [_search_keys(r) for r in replies[at : at + per - 1]]
            found = [k for r in searched for k in r or ()] if None not in searched else None
            members = replies[at + per - 1]
            if isinstance(members, Exception):
                raise members
            listed.append((found, [text(m) for m in members]))
        return listed

    async def _delete_thread(
        self, key: str, thread: langgraph_redis.ThreadOf, mark: Fingerprint,
        found: list[str] | None, writes: list[str],
    ) -> int:  # fmt: skip
        if found is None or mark.head > 0:  # not listed whole, or an oversized value compared
            return 0  # by its head only: left to its TTL
        roots, others = thread.members(found)
        roots = list(dict.fromkeys([key, *roots]))
        layout, keys_ = self.layout, [key, thread.latest or key, thread.writes_index]
        for root in roots:
            keys_ += [root, layout.shadow(root)]
        keys_ += [k for root in roots for k in (layout.claim(root), layout.held(root))]
        keys_ += list(dict.fromkeys([*others, *writes]))
        retry_ms = self.timing.lease_ms
        args: list[str | int] = [mark.sha1, len(writes), len(roots), retry_ms]
        result = int(await self.script("delete_thread")(keys=keys_, args=args))
        if result == 1:
            await self.unschedule(roots)
        elif result in (2, 3):
            await self.schedule({key: retry_ms})
        return result

    async def arm(self, checkpoint_keys: Sequence[str]) -> dict[str, int]:
        """(Re)create shadows from remaining TTLs and index their deadlines: key -> shadow ms
        (0: due now, -2: gone, -3: claimed by an archiver, which re-arms it itself, -4:
        archived and left to its TTL)."""
        t, layout = self.timing, self.layout
        batches = [
            (
                [k for key in chunk for k in (key, layout.shadow(key), layout.claim(key))],
                [t.buffer_ms, t.archive_after_ms, self._keep, *self.written_ms(chunk)],
            )
            for chunk in _chunks(checkpoint_keys)
        ]
        replies = await self._run("arm", batches) if checkpoint_keys else []
        armed = {k: int(r) for k, r in zip(checkpoint_keys, replies, strict=True)}
        await self.schedule({k: ms for k, ms in armed.items() if ms > 0})
        # Due now: keep a retry time already set (only_new): the poller archives it when due.
        await self.schedule(dict.fromkeys([k for k, ms in armed.items() if ms == 0], 0), True)
        return armed

    async def schedule(self, delays: dict[str, int], only_new: bool = False) -> None:
        """Record archive deadlines in the index, `delays` ms from now by Redis's clock."""
        items = list(delays.items())
        batches = []
        for chunk in _chunks(items):
            args: list[Any] = [int(only_new)]
            for key, ms in chunk:
                args += [key, int(ms)]
            batches.append(([self.layout.deadlines], args))
        if batches:
            await self._run_flat("schedule", batches)

    async def unschedule(self, gone: Sequence[str]) -> None:
        if gone:
            await self.client.zrem(self.layout.deadlines, *gone)

    async def hold(
        self, held: dict[str, Fingerprint], token: str, backoff_ms: int
    ) -> dict[str, int]:
        """After a failed archive, keep each key alive if it still holds the value claimed:
        key -> ms of hold left (0: ARCHIVER_MAX_HOLD reached; -1: not held). Our claims stay
        for `backoff_ms` so that nothing retries these keys before their scheduled retry."""
        t, items = self.timing, list(held.items())
        batches = []
        for chunk in _chunks(items):
            keys_ = [
                k for key, _ in chunk
                for k in (key, self.layout.claim(key), self.layout.held(key))
            ]  # fmt: skip
            args: list[Any] = [token, backoff_ms, t.extend_ms, t.buffer_ms, t.max_hold_ms]
            args.append(self.source.reader)
            for _, mark in chunk:
                args += mark
            batches.append((keys_, args))
        replies = await self._run("hold", batches) if batches else []
        return {key: int(r) for (key, _), r in zip(items, replies, strict=True)}

    async def release(self, claimed: Sequence[str], token: str) -> None:
        batches = [([self.layout.claim(k) for k in chunk], [token]) for chunk in _chunks(claimed)]
        if batches:
            await self._run_flat("release", batches)

    async def _run_flat(self, name: str, batches: list[tuple[list[str], list[Any]]]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for keys_, args in batches:
                await self.script(name)(keys=keys_, args=args, client=pipe)
            await pipe.execute()

    async def take_due(self, limit: int, retry_after_ms: int) -> tuple[list[str], int]:
        """Up to `limit` due keys of the index (pushed back by `retry_after_ms`), and how many
        entries are still due after them."""
        args = [limit, retry_after_ms]
        members, left = await self.script("take_due")(keys=[self.layout.deadlines], args=args)
        return [text(m) for m in members], int(left)

    async def stamp_sweep(self) -> None:
        """Record a completed sweep, by Redis's clock."""
        await self.script("stamp_sweep")(keys=[self.layout.last_sweep])

    async def sweep_age(self) -> float | None:
        """Seconds since any replica's last completed sweep, by Redis's clock; None if there
        is no stamp, or it lies in the future (a process whose clock ran ahead wrote it)."""
        age = int(await self.script("sweep_age")(keys=[self.layout.last_sweep]))
        return None if age < 0 else age / 1000

    async def read_oversized(self, key: str, size: int, head_bytes: int) -> Oversized | None:
        """The first `head_bytes` of a value too large to read whole, and the SHA-1 of all of
        it, read in chunks of READ_CHUNK (memory stays bounded); None if the key changed size
        or went away meanwhile. A JSON document cannot be read in parts: it is read whole."""
        if self.source.reader == "json":
            return await self._read_oversized_json(key, size, head_bytes)
        sha1 = hashlib.sha1(usedforsecurity=False)
        head = b""
        for start in range(0, size, READ_CHUNK):
            end = min(size, start + READ_CHUNK) - 1
            part = cast(bytes, await self.client.getrange(key, start, end))
            if not part:
                return None
            if start == 0:
                head = part[:head_bytes]
            await asyncio.to_thread(sha1.update, part)  # 4 MB: ~5 ms, off the event loop
        if await self.client.strlen(key) != size:
            return None
        return Oversized(head, size, sha1.hexdigest())

    async def _read_oversized_json(self, key: str, size: int, head_bytes: int) -> Oversized | None:
        value = await self.client.execute_command("JSON.GET", key)  # type: ignore[no-untyped-call]
        if not isinstance(value, bytes) or len(value) != size:
            return None
        return Oversized(value[:head_bytes], size, await asyncio.to_thread(digest, value))

    async def inputs(self, claimed: Sequence[model.Claim]) -> dict[str, bytes]:
        """What each claimed value decodes from: the value, followed (after a newline) by a
        JSON list of its pending writes when its source keeps some apart (langgraph-redis:
        those of a thread's latest checkpoint). Three pipelined round trips at most."""
        values = {c.key: c.value or b"" for c in claimed}
        wanted = {c.key: w for c in claimed if (w := self.source.writes_of(c.key)) is not None}
        latest = await self._still_latest(wanted)
        if not latest:
            return values
        async with self.client.pipeline(transaction=False) as pipe:
            for key in latest:
                pipe.zrange(wanted[key].index, 0, -1)
            indexed = await pipe.execute()
        members = {
            key: [m for m in map(text, found) if m.startswith(wanted[key].member_prefix)]
            for key, found in zip(latest, indexed, strict=True)
        }
        writes = await self._json_documents([m for found in members.values() for m in found])
        for key, found in members.items():
            docs = [doc for m in found if (doc := writes.get(m))]
            if docs:
                values[key] += b"\n[" + b",".join(docs) + b"]"
        return values

    async def _still_latest(self, wanted: dict[str, Any]) -> list[str]:
        """The keys among `wanted` that are their thread's latest checkpoint."""
        pointed = [k for k, w in wanted.items() if w.latest is not None]
        if not pointed:
            return list(wanted)
        async with self.client.pipeline(transaction=False) as pipe:
            for key in pointed:
                pipe.get(wanted[key].latest)
            names = await pipe.execute()
        latest = {k for k, name in zip(pointed, names, strict=True) if name and text(name) == k}
        return [k for k, w in wanted.items() if w.latest is None or k in latest]

    async def _json_documents(self, keys_: Sequence[str]) -> dict[str, bytes | None]:
        if not keys_:
            return {}
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys_:
                pipe.execute_command("JSON.GET", key)
            found = await pipe.execute(raise_on_error=False)
        return {k: v if isinstance(v, bytes) else None for k, v in zip(keys_, found, strict=True)}

    # --- the sweeper's side: its lock, SCAN pages of checkpoint keys, their classification

    async def take_sweep_lock(self, token: str, lease_ms: int) -> bool:
        return bool(await self.client.set(self.layout.sweep_lock, token, nx=True, px=lease_ms))

    async def renew_sweep_lock(self, token: str, lease_ms: int) -> None:
        await self.script("renew")(keys=[self.layout.sweep_lock], args=[token, lease_ms])

    async def release_sweep_lock(self, token: str) -> None:
        await self.script("release")(keys=[self.layout.sweep_lock], args=[token])

    async def scan_page(self, cursor: int, count: int) -> tuple[int, list[str]]:
        """One SCAN page: the next cursor and the checkpoint keys found."""
        cursor, found = await self.client.scan(cursor, match=self.source.scan_match, count=count)
        keys_ = [text(k) for k in found]
        return cursor, [k for k in keys_ if self.source.is_checkpoint(k)]

    async def classify(
        self, batch: Sequence[str], window: Sequence[int]
    ) -> tuple[list[str], list[str]]:
        """Split keys into due ones and not-due ones missing their shadow or index entry (one
        script call: only those keys come back). `window`: due_ms, event_due_ms, whether the
        index is polled (1/0), archive_after_ms."""
        keys_ = [self.layout.deadlines]
        for key in batch:
            keys_ += [key, self.layout.shadow(key)]
        args: list[int | str] = [*window, self._keep, *self.written_ms(batch)]
        reply = await self.script("classify")(keys=keys_, args=args)
        return [text(k) for k in reply[0]], [text(k) for k in reply[1]]


# Redis keys are bytes; bytes that are not UTF-8 survive as surrogates (our clients encode
# with the same error handler), so a key read back is the key written.
ENCODING_ERRORS = "surrogateescape"


def text(value: bytes | str) -> str:
    return value.decode("utf-8", ENCODING_ERRORS) if isinstance(value, bytes) else value


_STATUSES: dict[bytes | str, model.ClaimStatus] = {
    form: status for status in model.ClaimStatus for form in (status.value, status.value.encode())
}  # what claim.lua replies, as bytes (or str, on a client that decodes): a dict is 5x an Enum call


def _search_keys(reply: Any) -> list[str] | None:
    """The keys of an FT.SEARCH ... NOCONTENT reply (RESP2: [total, key...]; RESP3: a map),
    or None if they are not all of them, or it failed (no such index)."""
    if isinstance(reply, Exception):
        return None
    if isinstance(reply, dict):
        total = reply.get(b"total_results", reply.get("total_results"))
        results = reply.get(b"results", reply.get("results")) or []
        found = [text(r.get(b"id", r.get("id"))) for r in results]
    else:
        total, found = reply[0], [text(k) for k in reply[1:]]
    return found if int(total or 0) == len(found) else None


def _claim_of(key: str, reply: Any) -> model.Claim:
    if isinstance(reply, Exception):
        return model.Claim(key, model.ClaimStatus.ERROR, error=str(reply))
    status = _STATUSES[reply[0]]
    pttl = int(reply[1])
    if status is model.ClaimStatus.CLAIMED:
        return model.Claim(key, status, value=reply[2], pttl_ms=pttl)
    if status is model.ClaimStatus.OVERSIZED:
        return model.Claim(key, status, pttl_ms=pttl, size=int(reply[2]))
    if status is model.ClaimStatus.WRONGTYPE:
        return model.Claim(key, status, pttl_ms=pttl, error=f"key holds a {text(reply[2])}")
    return model.Claim(key, status, pttl_ms=pttl)


# --- erasure (consumer/erasure/): find a subject's checkpoints by their values, delete them ---


async def scan_page(cp: Checkpoints, cursor: int, count: int) -> tuple[int, list[str]]:
    """One SCAN page of checkpoint keys (as the sweeper pages): the next cursor and the keys."""
    cursor, found = await cp.client.scan(cursor, match=cp.layout.scan_match, count=count)
    named = [text(k) for k in found]
    return int(cursor), [k for k in named if cp.layout.is_checkpoint(k)]


async def read_page(
    cp: Checkpoints, keys_: Sequence[str], limit: int, budget: int
) -> list[bytes | int | None]:
    """The values of `keys_` in one call (consumer/lua/erasure_read.lua): each value, or its
    size when not read (over `limit`, or past `budget` bytes: read it alone), or None if gone
    or not a string."""
    if not keys_:
        return []
    reply = await _script(cp, "erasure_read")(keys=list(keys_), args=[limit, budget])
    return [r if isinstance(r, bytes | int) else None for r in reply]


async def chunks_of(cp: Checkpoints, key: str, size: int) -> list[bytes]:
    """A value too large to read whole, in READ_CHUNK pieces (GETRANGE), for a caller that
    scans them one by one; empty if the key went away."""
    parts = []
    for start in range(0, size, READ_CHUNK):
        part = cast(bytes, await cp.client.getrange(key, start, min(size, start + READ_CHUNK) - 1))
        if not part:
            return []
        parts.append(part)
    return parts


async def erase(cp: Checkpoints, read: Sequence[tuple[str, str]]) -> list[int]:
    """Delete each (key, SHA-1 of the value read) with its shadow, claim and hold mark if it
    still holds that value (consumer/lua/erase.lua), and its deadline-index entry: per key
    1 deleted, 0 changed since (kept), -1 already gone."""
    layout, batches = cp.layout, []
    for chunk in _chunks(read):
        keys_ = [
            k for key, _ in chunk
            for k in (key, layout.shadow(key), layout.claim(key), layout.held(key))
        ]  # fmt: skip
        batches.append((keys_, [sha for _, sha in chunk]))
    script = _script(cp, "erase")
    replies: list[Any] = []
    async with cp.client.pipeline(transaction=False) as pipe:
        for keys_, args in batches:
            await script(keys=keys_, args=args, client=pipe)
        for reply in await pipe.execute():
            replies.extend(reply)
    await cp.unschedule([key for (key, _), r in zip(read, replies, strict=True) if r != 0])
    return [int(r) for r in replies]


def _script(cp: Checkpoints, name: str) -> AsyncScript:
    if name not in cp._scripts:
        cp._scripts[name] = cp.client.register_script(lua(name))
    return cp._scripts[name]


# --- erasure of the langgraph-redis source (consumer/erasure/langgraph_side.py): SCAN pages of
# any pattern, documents read with JSON.GET, a thread's keys deleted with their companions ---


async def scan_keys(cp: Checkpoints, cursor: int, match: str, count: int) -> tuple[int, list[str]]:
    """One SCAN page of the keys matching the glob `match`: the next cursor and the keys."""
    cursor, found = await cp.client.scan(cursor, match=match, count=count)
    return int(cursor), [text(k) for k in found]


async def documents(cp: Checkpoints, keys_: Sequence[str], *paths: str) -> list[bytes | None]:
    """JSON.GET of each key (the whole document, or `paths`), pipelined (one round trip): the
    reply, or None if the key is gone or holds no document."""
    if not keys_:
        return []
    async with cp.client.pipeline(transaction=False) as pipe:
        for key in keys_:
            pipe.execute_command("JSON.GET", key, *paths)
        found = await pipe.execute(raise_on_error=False)
    return [v if isinstance(v, bytes) else None for v in found]


async def delete_keys(cp: Checkpoints, keys_: Sequence[str]) -> tuple[int, int]:
    """Delete keys (of any family) and, for the archived checkpoint keys among them, their
    shadow, claim, hold mark and deadline-index entry, pipelined; the checkpoints last (they
    are what tells a thread's owner: a run cut short leaves them to be found again). Returns
    (keys deleted, of which archived checkpoints)."""
    archived = [k for k in keys_ if cp.source.is_checkpoint(k)]
    others = [k for k in keys_ if not cp.source.is_checkpoint(k)]
    companions = [c for k in archived for c in (cp.layout.shadow(k), cp.layout.claim(k),
                                                 cp.layout.held(k))]  # fmt: skip
    async with cp.client.pipeline(transaction=False) as pipe:
        for chunk in _chunks(others):
            pipe.delete(*chunk)
        for chunk in _chunks(companions):
            pipe.delete(*chunk)
        for chunk in _chunks(archived):
            pipe.zrem(cp.layout.deadlines, *chunk)
        for chunk in _chunks(archived):
            pipe.delete(*chunk)
        replies = await pipe.execute()
    others_gone = sum(int(r) for r in replies[: len(_chunks(others))])
    checkpoints_gone = sum(int(r) for r in replies[len(replies) - len(_chunks(archived)) :])
    return checkpoints_gone + others_gone, checkpoints_gone

"""A seeded agent workload: conversations writing successive checkpoints into Redis.

Checkpoints grow (new messages appended), slide (older messages replaced by a summary),
are sometimes rewritten under the same key (always a superset of that key's previous value,
so that every message written stays recoverable from Redis until archived), and a few are
unreadable on purpose (they must be dead-lettered with their raw bytes). Producers mix the
archiver's helper (checkpoint + shadow + deadline) with plain `SET ... PX` writes that only
the consumer's events or the sweeper can arm. Every acknowledged write goes to the ledger.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from consumer import keys, producer
from ops.faults.ledger import Ledger

RETRYABLE = (RedisError, OSError, TimeoutError)
WRITE_DEADLINE_S = 120.0
ROLES = ("user", "assistant", "assistant", "tool", "user")
TEXTS = (
    "¿Tienes hueco mañana a las 10?",
    "Sure, booking you in for a trim.",
    "料金はいくらですか",
    "Done ✅ — see you then!",
    "Please confirm the address: Calle Mayor 1, 28013",
    'JSON-ish text {"not": "parsed"} with quotes',
    "emoji 👩‍💻 and combining é",
    "tabs\tand\nnewlines",
)
BAD_PAYLOADS = (
    b'{"conversation_id": "x", "messages": [{"role": "user", "content": "trunc',
    b"not json at all",
    b'{"messages": "not a list"}',
    b"\x80\x04K\x01.",  # a pickle: refused unless ARCHIVER_ALLOW_PICKLE
    b'{"messages": [{"role": "wizard", "content": "x"}]}',
    b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}',
)


@dataclass(frozen=True, slots=True)
class Mix:
    """Shape of a workload."""

    conversations: int = 300
    checkpoints: tuple[int, int] = (2, 6)
    duration: float = 30.0
    plain: float = 0.3
    rewrite: float = 0.1
    bad: float = 0.02
    due_rewrite: float = 0.0
    ts_drift: float = 0.0
    persistent: float = 0.0  # of the plain writes, the share without any TTL
    months: tuple[int, ...] = ()  # month offsets of conversations' message times (default: now)


@dataclass(slots=True)
class Conversation:
    cid: str
    tenant: str
    customer: str | int | None
    user: str | None
    window: int
    messages: list[dict[str, Any]] = field(default_factory=list)
    last_ts: int = 0
    last_key: str | None = None
    last_doc: dict[str, Any] | None = None
    shift_days: int | None = None  # message times this far from now (None: now, or 40 days ago)


@dataclass(order=True, frozen=True, slots=True)
class Op:
    at: float
    seq: int
    kind: str = field(compare=False)
    target: int = field(compare=False)
    key: str = field(default="", compare=False)


def _conversation_id(rng: random.Random, seed: int, i: int) -> str:
    style = rng.random()
    if style < 0.1:
        return f"wa:+3460{seed % 1000:03d}{i:04d}"  # colons inside the id
    if style < 0.15:
        return f"{{tenant-{i % 3}}}-conv-{seed}-{i}"  # a cluster hash tag in the key
    if style < 0.2:
        return f"agente-é-{seed}-{i}"
    return f"c{seed}-{i:05d}"


def conversations(
    rng: random.Random, seed: int, n: int, months: tuple[int, ...] = ()
) -> list[Conversation]:
    found = [
        Conversation(
            cid=_conversation_id(rng, seed, i),
            tenant=rng.choice(("salon-madrid", "clinic-osaka", "garage-lyon")),
            customer=rng.choice((None, f"cust-{i}", 1000 + i)),
            user=rng.choice((None, f"user-{i % 17}")),
            window=rng.choice((0, 3, 6, 50)),
        )
        for i in range(n)
    ]
    for i, conv in enumerate(found if months else ()):
        conv.shift_days = 31 * months[i % len(months)]  # every month gets conversations
    return found


def _content(rng: random.Random, n: int) -> object:
    if rng.random() < 0.05:
        return [{"type": "text", "text": rng.choice(TEXTS)}, {"type": "image_url", "n": n}]
    return f"{rng.choice(TEXTS)} #{n} {rng.randrange(10**9)}"


def add_messages(rng: random.Random, conv: Conversation, count: int) -> None:
    days = -rng.choice((0, 0, 0, 40)) if conv.shift_days is None else conv.shift_days
    base = datetime.now(UTC) + timedelta(days=days)
    for _ in range(count):
        n = len(conv.messages)
        message: dict[str, Any] = {
            "id": f"m{n}-{rng.randrange(16**6):06x}",
            "role": ROLES[n % len(ROLES)],
            "content": _content(rng, n),
            "timestamp": (base + timedelta(seconds=n)).isoformat().replace("+00:00", "Z"),
        }
        if rng.random() < 0.3:
            message["metadata"] = {"n": n, "tags": ["a", "b"], "nested": {"ok": True}}
        conv.messages.append(message)


def document(
    conv: Conversation, new: int, rng: random.Random | None = None, drift: float = 0.0
) -> dict[str, Any]:
    """The checkpoint a conversation writes now: a window of its messages (+ a summary).
    With `drift`, a message carried over from an earlier checkpoint may come with its
    timestamp dropped, cut to milliseconds or moved (the same message: same id, content)."""
    size = new if conv.window == 0 else max(conv.window, new)
    first = max(0, len(conv.messages) - size)
    carried = len(conv.messages) - new
    doc: dict[str, Any] = {
        "conversation_id": conv.cid,
        "tenant_id": conv.tenant,
        "customer_id": conv.customer,
        "user_id": conv.user,
        "messages": [
            _drifted(m, rng) if rng and i < carried and rng.random() < drift else m
            for i, m in enumerate(conv.messages[first:], start=first)
        ],
    }
    if first:
        doc["conversation_summary"] = f"Summary of {conv.cid}: messages 0..{first - 1}."
    return doc


def _drifted(message: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    changed = dict(message)
    stamp = datetime.fromisoformat(changed.pop("timestamp"))
    how = rng.choice(("dropped", "milliseconds", "moved"))
    if how == "milliseconds":
        changed["timestamp"] = stamp.isoformat(timespec="milliseconds")
    elif how == "moved":
        changed["timestamp"] = (stamp + timedelta(seconds=1)).isoformat()
    return changed


def schedule(rng: random.Random, mix: Mix, count: int) -> list[Op]:
    """Checkpoint times per conversation (≥ 1.05 s apart, so each gets a key of its own)."""
    seq = itertools.count()
    ops: list[Op] = []
    for target in range(count):
        n = rng.randint(*mix.checkpoints)
        at = rng.uniform(0, mix.duration * 0.3)
        for _ in range(n):
            if at > mix.duration:
                break
            ops.append(Op(at, next(seq), "checkpoint", target))
            at += 1.05 + rng.expovariate(n / max(1.0, mix.duration * 0.7))
    bad = max(1, round(count * mix.bad)) if mix.bad else 0
    ops += [Op(rng.uniform(0, mix.duration), next(seq), "bad", i) for i in range(bad)]
    heapq.heapify(ops)
    return ops


async def retrying(what: Callable[[], Awaitable[Any]]) -> Any:
    """Repeat a write until Redis acknowledges it (a timed-out write may have applied: the
    retry writes the same value again, so the ledger's record is exact either way)."""
    deadline = time.monotonic() + WRITE_DEADLINE_S
    while True:
        try:
            return await what()
        except RETRYABLE:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


class Writer:
    """Executes a schedule in real time against Redis and records acknowledged writes."""

    def __init__(
        self,
        client: aioredis.Redis,
        prod: producer.Producer,
        ledger: Ledger,
        rng: random.Random,
        mix: Mix,
        seed: int,
    ) -> None:
        self.client = client
        self.producer = prod
        self.ledger = ledger
        self.rng = rng
        self.mix = mix
        self.convs = conversations(rng, seed, mix.conversations, mix.months)
        self.ops = schedule(rng, mix, len(self.convs))
        self.seq = itertools.count(len(self.ops))
        self.seed = seed
        self.owner: dict[str, int] = {}
        self.done = asyncio.Event()
        self._rewriting = asyncio.Lock()  # read-modify-write of a key: one at a time

    async def run(self) -> None:
        start = time.monotonic()
        try:
            while self.ops:
                op = heapq.heappop(self.ops)
                delay = start + op.at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self._execute(op, time.monotonic() - start)
        finally:
            self.done.set()

    async def _execute(self, op: Op, now: float) -> None:
        if op.kind == "checkpoint":
            await self.checkpoint(op.target, now)
        elif op.kind == "rewrite":
            await self.rewrite(self.convs[op.target], op.key)
        else:
            await self._bad(op.target)

    async def checkpoint(self, target: int, now: float) -> None:
        conv = self.convs[target]
        new = self.rng.randint(1, 4)
        add_messages(self.rng, conv, new)
        doc = document(conv, new, self.rng, self.mix.ts_drift)
        conv.last_ts = max(int(time.time()), conv.last_ts + 1)
        key = self.producer.key(conv.cid, conv.last_ts)
        mode = "plain" if self.rng.random() < self.mix.plain else "producer"
        if mode == "plain" and self.mix.persistent and self.rng.random() < self.mix.persistent:
            mode = "persistent"
        await self.write(key, doc, mode)
        conv.last_key, conv.last_doc = key, doc
        self.owner[key] = target
        if self.rng.random() < self.mix.rewrite:
            self._later(now + self.rng.uniform(0.05, 0.9), target, key)
        if self.rng.random() < self.mix.due_rewrite:
            when = now + self.producer.archive_after + self.rng.uniform(-0.4, 0.3)
            self._later(when, target, key)

    def _later(self, at: float, target: int, key: str) -> None:
        heapq.heappush(self.ops, Op(at, next(self.seq), "rewrite", target, key))

    async def rewrite(self, conv: Conversation, key: str, mode: str | None = None) -> bool:
        """Rewrite `key` with its latest content plus new messages (a superset). Rewrites are
        serialised: two in flight would each extend the same version, the later dropping the
        other's messages (an agent's own overwrite, not the archiver's loss)."""
        async with self._rewriting:
            return await self._rewrite(conv, key, mode)

    async def _rewrite(self, conv: Conversation, key: str, mode: str | None) -> bool:
        latest = self.ledger.latest(key)
        if latest is None or not latest.good:
            return False
        doc = orjson.loads(latest.raw)
        new = self.rng.randint(1, 2)
        add_messages(self.rng, conv, new)
        doc["messages"] = [*doc["messages"], *conv.messages[-new:]]
        chosen = mode or self.rng.choice(("producer", "keepttl"))
        await self.write(key, doc, chosen)
        return True

    async def _bad(self, n: int) -> None:
        key = self.producer.key(f"bad-{self.seed}-{n}", int(time.time()))
        raw = self.rng.choice(BAD_PAYLOADS) + f" #{n}".encode()
        await retrying(lambda: self.producer.write(self.client, key, raw))
        self.ledger.record(key, raw, None, "bad")

    async def write(self, key: str, doc: dict[str, Any], mode: str) -> None:
        raw = orjson.dumps(doc)
        if mode == "keepttl":
            applied = await retrying(lambda: self.client.set(key, raw, xx=True, keepttl=True))
            if not applied:  # archived and gone meanwhile: write it afresh
                mode = "producer"
        if mode == "producer":
            await retrying(lambda: self.producer.write(self.client, key, raw))
        elif mode == "plain":
            ttl_ms = int(self.producer.ttl * 1000)
            await retrying(lambda: self.client.set(key, raw, px=ttl_ms))
        elif mode == "persistent":  # no TTL at all: archived once ARCHIVE_AFTER old
            await retrying(lambda: self.client.set(key, raw))
        self.ledger.record(key, raw, doc, mode)


async def flood(
    client: aioredis.Redis,
    prod: producer.Producer,
    ledger: Ledger,
    rng: random.Random,
    count: int,
    seed: int,
) -> float:
    """`count` one-checkpoint conversations in the helper's layout (checkpoint + shadow +
    deadline), written with a far expiry, then given absolute expiry times so that every
    shadow expires within the same 2 s, `prod.archive_after` after the writing ends (plus
    the 1-2 s the consumer takes to start, see runner); the checkpoints expire a buffer
    later. Returns the firing time (unix s)."""
    far_ms = int((time.time() + 3600) * 1000)
    written: list[str] = []
    for start in range(0, count, 500):
        batch = [_flood_one(prod, rng, seed, i) for i in range(start, min(count, start + 500))]
        await _flood_write(client, prod.layout, batch, far_ms)
        for key, doc, raw in batch:
            ledger.record(key, raw, doc, "producer")
        written.extend(key for key, _, _ in batch)
    fire_ms = int((time.time() + prod.archive_after + 2.0) * 1000)
    buffer_ms = int((prod.ttl - prod.archive_after) * 1000)
    for start in range(0, count, 1000):
        await _flood_expire(
            client, prod.layout, written[start : start + 1000], fire_ms, buffer_ms, rng
        )
    return fire_ms / 1000


def _flood_one(
    prod: producer.Producer, rng: random.Random, seed: int, i: int
) -> tuple[str, dict[str, Any], bytes]:
    conv = Conversation(f"flood-{seed}-{i}", "flood", f"cust-{i}", None, 0)
    add_messages(rng, conv, 2)
    doc = document(conv, 2)
    return prod.key(conv.cid), doc, orjson.dumps(doc)


async def _flood_write(
    client: aioredis.Redis,
    layout: keys.Layout,
    batch: list[tuple[str, dict[str, Any], bytes]],
    far_ms: int,
) -> None:
    async with client.pipeline(transaction=False) as pipe:
        for key, _, raw in batch:
            pipe.set(key, raw, pxat=far_ms)
            pipe.set(layout.shadow(key), b"", pxat=far_ms)
            pipe.zadd(layout.deadlines, {key: far_ms})
        await pipe.execute()


async def _flood_expire(
    client: aioredis.Redis,
    layout: keys.Layout,
    keys_: list[str],
    fire_ms: int,
    buffer_ms: int,
    rng: random.Random,
) -> None:
    async with client.pipeline(transaction=False) as pipe:
        for key in keys_:
            fire = fire_ms + rng.randrange(2000)
            pipe.pexpireat(key, fire + buffer_ms)
            pipe.pexpireat(layout.shadow(key), fire)
            pipe.zadd(layout.deadlines, {key: fire})
        await pipe.execute()


# --- huge values -----------------------------------------------------------------------------

HUGE_CHUNK = 4 * 1024 * 1024
HUGE_HEAD = 64 * 1024  # what the archiver keeps of a value over its limit (archive.py)


async def write_oversized(
    client: aioredis.Redis, prod: producer.Producer, ledger: Ledger, key: str, size: int, seed: int
) -> None:
    """A value of `size` bytes that is no checkpoint at all, built in Redis in chunks (never
    whole in this process) and put in place with TTL, shadow and deadline like a producer's."""
    rng = random.Random(seed)
    sha1 = hashlib.sha1(usedforsecurity=False)
    head = b""
    building = f"{key}:building"  # outside the checkpoint pattern: no event, no sweep
    await client.delete(building)
    for start in range(0, size, HUGE_CHUNK):
        chunk = rng.randbytes(min(HUGE_CHUNK, size - start))
        if not head:
            chunk = b"\x00not a checkpoint\x00" + chunk[18:]
            head = chunk[:HUGE_HEAD]
        sha1.update(chunk)
        await retrying(lambda c=chunk: client.append(building, c))  # type: ignore[misc]
    await _put_in_place(client, prod, key, building)
    ledger.record_oversized(key, head, size, sha1.hexdigest())


async def write_large(
    client: aioredis.Redis, prod: producer.Producer, ledger: Ledger, key: str, messages: int
) -> int:
    """A valid checkpoint of `messages` messages of about 250 bytes (tens of MB for 200,000),
    written as a producer would; returns its size."""
    conv = Conversation(key.rsplit(":", 2)[-2], "large-tenant", "cust-large", None, 0)
    stamp = datetime.now(UTC)
    conv.messages = [
        {"id": f"l{i}", "role": ROLES[i % len(ROLES)], "content": f"{TEXTS[i % len(TEXTS)]} " * 5
         + str(i), "timestamp": (stamp + timedelta(microseconds=i)).isoformat()}
        for i in range(messages)
    ]  # fmt: skip
    doc = document(conv, messages)
    raw = orjson.dumps(doc)
    await retrying(lambda: prod.write(client, key, raw))
    ledger.record(key, raw, doc, "large")
    return len(raw)


async def _put_in_place(
    client: aioredis.Redis, prod: producer.Producer, key: str, building: str
) -> None:
    layout = prod.layout
    due_ms = int((time.time() + prod.archive_after) * 1000)
    async with client.pipeline(transaction=True) as pipe:
        pipe.rename(building, key)
        pipe.pexpire(key, int(prod.ttl * 1000))
        pipe.set(layout.shadow(key), b"", px=int(prod.archive_after * 1000))
        pipe.zadd(layout.deadlines, {key: due_ms})
        await pipe.execute()

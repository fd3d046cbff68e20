"""The Redis side of the archive path: claim, compare-and-delete, arm, hold, all pipelined.

Each operation takes many keys and costs one round trip; the Lua scripts live in consumer/lua.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, NamedTuple

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from consumer import keys, model

Redis = aioredis.Redis


@cache
def lua(name: str) -> str:
    source: str = (resources.files("consumer") / "lua" / f"{name}.lua").read_text(encoding="utf-8")
    return source


def now_ms() -> int:
    return int(time.time() * 1000)


def digest(value: bytes) -> str:
    """What finish.lua compares: the SHA-1 of the archived value (Redis's redis.sha1hex)."""
    return hashlib.sha1(value, usedforsecurity=False).hexdigest()


@dataclass(frozen=True, slots=True)
class Timing:
    """The windows the scripts need, in milliseconds."""

    buffer_ms: int
    archive_after_ms: int
    lease_ms: int
    hold_ms: int


class Finished(NamedTuple):
    """Outcome of compare-and-delete for one key: 1 deleted, 0 changed since, -1 gone."""

    key: str
    result: int


SCRIPTS = ("claim", "finish", "arm", "hold", "release", "renew", "take_due", "classify")
CHUNK = 500  # checkpoints per script call: bounds how long one call blocks Redis


def _chunks(items: Sequence[str]) -> list[Sequence[str]]:
    return [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]


class Checkpoints:
    """Scripted operations on many checkpoint keys and their companions at once.

    Each script takes a batch of checkpoints (one call per CHUNK keys): one round trip and
    one command to encode instead of one per key. Under Redis Cluster a batch must first be
    split by hash slot (our companion keys share their checkpoint's slot).
    """

    def __init__(self, client: Redis, layout: keys.Layout, timing: Timing) -> None:
        self.client = client
        self.layout = layout
        self.timing = timing
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

    def ages(self, batch: Sequence[str], now: int) -> list[int]:
        ages = []
        for key in batch:
            info = self.layout.parse(key)
            ages.append(now - int(info.written_ts * 1000) if info else 0)
        return ages

    async def _run(self, name: str, batches: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """Run a script once per batch, pipelined; replies concatenated in order."""
        async with self.client.pipeline(transaction=False) as pipe:
            for keys_, args in batches:
                await self.script(name)(keys=keys_, args=args, client=pipe)
            replies = await pipe.execute()
        return [reply for batch in replies for reply in batch]

    async def claim(self, requests: Sequence[str], token: str, due_ms: int) -> list[model.Claim]:
        """Claim each due key (one round trip); keys not due get their shadow re-armed."""
        t, now, layout = self.timing, now_ms(), self.layout
        head = [token, t.lease_ms, t.hold_ms, due_ms, t.buffer_ms, t.archive_after_ms]
        batches = [
            (
                [k for key in chunk for k in (key, layout.claim(key), layout.shadow(key))],
                head + self.ages(chunk, now),
            )
            for chunk in _chunks(requests)
        ]
        replies = await self._run("claim", batches) if requests else []
        return [_claim_of(key, reply) for key, reply in zip(requests, replies, strict=True)]

    async def finish(self, done: Sequence[tuple[str, str]], token: str) -> list[Finished]:
        """Compare-and-delete each (key, digest) and drop it from the deadline index."""
        layout, batches = self.layout, []
        for i in range(0, len(done), CHUNK):
            chunk = done[i : i + CHUNK]
            keys_ = [k for key, _ in chunk for k in (key, layout.shadow(key), layout.claim(key))]
            batches.append((keys_, [token, *(sha for _, sha in chunk)]))
        replies = await self._run("finish", batches) if done else []
        await self.unschedule([key for (key, _), r in zip(done, replies, strict=True) if r != 0])
        return [Finished(key, int(r)) for (key, _), r in zip(done, replies, strict=True)]

    async def arm(self, checkpoint_keys: Sequence[str]) -> dict[str, int]:
        """(Re)create shadows from remaining TTLs and index their deadlines: key -> shadow ms
        (0: due now, -2: gone, -3: claimed by an archiver, which re-arms it itself)."""
        t, now, layout = self.timing, now_ms(), self.layout
        batches = [
            (
                [k for key in chunk for k in (key, layout.shadow(key), layout.claim(key))],
                [t.buffer_ms, t.archive_after_ms, *self.ages(chunk, now)],
            )
            for chunk in _chunks(checkpoint_keys)
        ]
        replies = await self._run("arm", batches) if checkpoint_keys else []
        armed = {k: int(r) for k, r in zip(checkpoint_keys, replies, strict=True)}
        await self.schedule({k: now + ms for k, ms in armed.items() if ms > 0})
        due = [k for k, ms in armed.items() if ms == 0]
        if due:  # keep a retry time already set (nx): the poller archives it when due
            await self.client.zadd(self.layout.deadlines, dict.fromkeys(due, now), nx=True)
        return armed

    async def schedule(self, deadlines: dict[str, int]) -> None:
        """Record archive deadlines (ms since the epoch) in the index."""
        if deadlines:
            await self.client.zadd(self.layout.deadlines, dict(deadlines))

    async def unschedule(self, gone: Sequence[str]) -> None:
        if gone:
            await self.client.zrem(self.layout.deadlines, *gone)

    async def hold(self, held: dict[str, tuple[str, int]], token: str, backoff_ms: int) -> None:
        """After a failed archive: key -> (digest, hold-until ms). Our claims stay for
        `backoff_ms` so that nothing retries these keys before their scheduled retry."""
        items = list(held.items())
        batches = []
        for i in range(0, len(items), CHUNK):
            chunk = items[i : i + CHUNK]
            keys_ = [k for key, _ in chunk for k in (key, self.layout.claim(key))]
            args: list[Any] = [token, backoff_ms]
            for _, (sha, until) in chunk:
                args += [until, sha]
            batches.append((keys_, args))
        if batches:
            await self._run_flat("hold", batches)

    async def release(self, claimed: Sequence[str], token: str) -> None:
        batches = [([self.layout.claim(k) for k in chunk], [token]) for chunk in _chunks(claimed)]
        if batches:
            await self._run_flat("release", batches)

    async def _run_flat(self, name: str, batches: list[tuple[list[str], list[Any]]]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for keys_, args in batches:
                await self.script(name)(keys=keys_, args=args, client=pipe)
            await pipe.execute()

    async def take_due(self, limit: int, retry_after_ms: int) -> list[str]:
        now = now_ms()
        args: list[int] = [now, limit, now + retry_after_ms]
        members = await self.script("take_due")(keys=[self.layout.deadlines], args=args)
        return [text(m) for m in members]


# Redis keys are bytes; bytes that are not UTF-8 survive as surrogates (our clients encode
# with the same error handler), so a key read back is the key written.
ENCODING_ERRORS = "surrogateescape"


def text(value: bytes | str) -> str:
    return value.decode("utf-8", ENCODING_ERRORS) if isinstance(value, bytes) else value


_STATUSES: dict[bytes | str, model.ClaimStatus] = {
    form: status for status in model.ClaimStatus for form in (status.value, status.value.encode())
}  # what claim.lua replies, as bytes (or str, on a client that decodes): a dict is 5x an Enum call


def _claim_of(key: str, reply: Any) -> model.Claim:
    if isinstance(reply, Exception):
        return model.Claim(key, model.ClaimStatus.ERROR, error=str(reply))
    status = _STATUSES[reply[0]]
    pttl = int(reply[1])
    if status is model.ClaimStatus.CLAIMED:
        return model.Claim(key, status, value=reply[2], pttl_ms=pttl)
    if status is model.ClaimStatus.WRONGTYPE:
        return model.Claim(key, status, pttl_ms=pttl, error=f"key holds a {text(reply[2])}")
    return model.Claim(key, status, pttl_ms=pttl)

"""The langgraph-redis source: what LangGraph's official Redis checkpointer
(langgraph-checkpoint-redis: RedisSaver, AsyncRedisSaver, ShallowRedisSaver) writes.

Archived: every root checkpoint document, `checkpoint:{thread}:__empty__:{checkpoint_id}`
(ShallowRedisSaver: its one `checkpoint:{thread}:`), each from its own TTL. A document holds
the thread's whole message list at that step (LangChain constructor JSON); messages a later
step removed survive only in older checkpoints, so every checkpoint is archived, and the
pending writes on the `messages` channel of a thread's latest checkpoint too. Identity is
(thread, message id). Subgraph checkpoints (namespaces other than the root) repeat their
parent's messages and are not archived. The checkpointer stores no tenant, user or customer:
ARCHIVER_THREAD_PATTERN and ARCHIVER_STATE_FIELDS map them (`Mapping`).

Fields are read from the document, not from the key: thread ids and namespaces may hold colons.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from consumer import codecs, exceptions, model

PREFIX = "checkpoint:"
ROOT_NS = "__empty__"
# A root checkpoint of the full savers; ShallowRedisSaver's key ends with the raw empty namespace.
_FULL = re.compile(r"^checkpoint:(?P<thread>.+):__empty__:(?P<id>[0-9a-f-]{36})$", re.DOTALL)
_SHALLOW = re.compile(r"^checkpoint:(?P<thread>.+):$", re.DOTALL)
WRITES_SEPARATOR = b"\n"  # JSON.GET's output never holds a raw newline
UUID_EPOCH_OFFSET = 0x01B21DD213814000  # 100 ns ticks from 1582-10-15 to 1970-01-01
INDEXES = ("checkpoint", "checkpoint_write")  # the library's RediSearch indexes of a thread's keys
THREAD_KEYS_MAX = 10_000  # keys listed per index and thread: a larger thread is left to its TTL
REMEMBERED_IDS = 100_000  # messages remembered as archived, across threads: ~25 MB (measured)
MAPPED = ("tenant_id", "user_id", "customer_id", "conversation_id")


@dataclass(frozen=True, slots=True)
class Mapping:
    """Who a thread belongs to: named groups of ARCHIVER_THREAD_PATTERN over the thread id,
    then ARCHIVER_STATE_FIELDS (`tenant_id=tenant,user_id=user.id`: dotted paths into the
    checkpoint's channel values), which win where both give a value."""

    thread_pattern: re.Pattern[str] | None = None
    state_fields: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def parse(cls, pattern: str | None, fields: str | None) -> Mapping:
        compiled = None
        if pattern:
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise exceptions.ConfigError(f"ARCHIVER_THREAD_PATTERN: {exc}") from None
            unknown = set(compiled.groupindex) - set(MAPPED)
            if unknown:
                raise exceptions.ConfigError(
                    f"ARCHIVER_THREAD_PATTERN: unknown groups {sorted(unknown)}; use {MAPPED}"
                )
        return cls(compiled, _state_fields(fields or ""))

    def of(self, thread: str, state: dict[str, Any]) -> dict[str, str]:
        found: dict[str, str] = {}
        if self.thread_pattern is not None:
            match = self.thread_pattern.fullmatch(thread)
            if match is None:
                raise exceptions.DecodeError("thread id does not match ARCHIVER_THREAD_PATTERN")
            found |= {k: v for k, v in match.groupdict().items() if v}
        for name, path in self.state_fields:
            value = _dig(state, path)
            if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
                found[name] = str(value)
        return found


def _state_fields(text: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, path = item.partition("=")
        if name.strip() not in MAPPED or not path.strip():
            raise exceptions.ConfigError(
                f"ARCHIVER_STATE_FIELDS: {item!r} is not NAME=channel.path with NAME one of {MAPPED}"
            )
        pairs.append((name.strip(), tuple(path.strip().split("."))))
    return tuple(pairs)


def _dig(state: object, path: tuple[str, ...]) -> object:
    for part in path:
        if not isinstance(state, dict):
            return None
        state = state.get(part)
    return state


@dataclass(frozen=True, slots=True)
class WritesOf:
    """Where a checkpoint's pending writes are listed: `index` (a sorted set of write keys,
    those starting with `member_prefix` are this checkpoint's), read only while `latest` (the
    thread's latest-checkpoint pointer; None for ShallowRedisSaver, whose one key is always
    the latest) still names the checkpoint."""

    latest: str | None
    index: str
    member_prefix: str


@dataclass(frozen=True, slots=True)
class ThreadOf:
    """What deleting an archived checkpoint's whole thread needs (ARCHIVER_DELETE_ARCHIVED=1):
    the thread id and the RediSearch query that lists its keys (the library's own indexes,
    `checkpoint` and `checkpoint_write`), its latest pointer (None: ShallowRedisSaver) and the
    index of its pending writes, which must not have changed."""

    thread: str
    query: str
    latest: str | None
    writes_index: str

    def members(self, found: Sequence[str]) -> tuple[list[str], list[str]]:
        """Of the keys a search found, those of this thread (a tag matches case-insensitively):
        its root checkpoints, and every other key of the thread (subgraph checkpoints, their
        latest pointers and write indexes, writes)."""
        mine = [k for k in found if _thread_key(k, self.thread)]
        roots = [k for k in mine if _root_of(k) == self.thread]
        others = [k for k in mine if _root_of(k) != self.thread]
        companions = [c for k in mine if k.startswith(PREFIX) for c in self._companions(k)]
        return roots, others + companions

    def _companions(self, checkpoint: str) -> list[str]:
        rest = checkpoint.removeprefix(PREFIX)
        if self.latest is None:  # ShallowRedisSaver: checkpoint:{thread}:{ns}
            ns = rest.removeprefix(f"{self.thread}:") or ROOT_NS
            return [f"write_registry:{self.thread}:{ns}:shallow"]
        return [f"checkpoint_latest:{rest.rpartition(':')[0]}", f"write_keys_zset:{rest}"]


def _thread_key(key: str, thread: str) -> bool:
    return key.startswith((f"{PREFIX}{thread}:", f"checkpoint_write:{thread}:"))


def _root_of(key: str) -> str | None:
    match = _FULL.match(key) or _SHALLOW.match(key)
    return match.group("thread") if match else None


_TAG_SPECIAL = re.compile(r"(\W)")


def _tag_query(thread: str) -> str:
    return "@thread_id:{" + _TAG_SPECIAL.sub(r"\\\1", thread) + "}"


class LangGraphRedis:
    name = "langgraph-redis"
    reader: Literal["string", "json"] = "json"
    write_events = ("json.set", "expire")
    notify_flags = "Exgd"  # d: module events (json.set)
    scan_match = PREFIX + "*"

    deletes = False  # a checkpoint alone never is: its thread is, whole (`thread_of`)

    def __init__(
        self, options: codecs.CodecOptions, mapping: Mapping, delete_threads: bool
    ) -> None:
        self.options = options
        self.mapping = mapping
        self.delete_threads = delete_threads
        self._archived: OrderedDict[bytes, None] = OrderedDict()  # see _identity

    def is_checkpoint(self, key: str) -> bool:
        return _FULL.match(key) is not None or _SHALLOW.match(key) is not None

    def written_ms(self, key: str) -> int:
        """A full saver's checkpoint id is a UUID v6: its time is the checkpoint's."""
        match = _FULL.match(key)
        if match is None:
            return -1
        hexa = match.group("id").replace("-", "")
        ticks = (int(hexa[0:12], 16) << 12) | (int(hexa[13:16], 16))
        return max(-1, (ticks - UUID_EPOCH_OFFSET) // 10_000)

    def writes_of(self, key: str) -> WritesOf | None:
        full = _FULL.match(key)
        if full is not None:
            thread, ident = full.group("thread"), full.group("id")
            return WritesOf(
                f"checkpoint_latest:{thread}:{ROOT_NS}",
                f"write_keys_zset:{thread}:{ROOT_NS}:{ident}",
                f"checkpoint_write:{thread}:{ROOT_NS}:{ident}:",
            )
        shallow = _SHALLOW.match(key)
        if shallow is None:
            return None
        thread = shallow.group("thread")
        return WritesOf(None, f"write_registry:{thread}:{ROOT_NS}:shallow", "")

    def thread_of(self, key: str) -> ThreadOf | None:
        """With ARCHIVER_DELETE_ARCHIVED=1, how to delete a root checkpoint's thread."""
        writes = self.writes_of(key) if self.delete_threads else None
        thread = _root_of(key)
        if writes is None or thread is None:
            return None
        return ThreadOf(thread, _tag_query(thread), writes.latest, writes.index)

    # --- decoding

    def decode(self, key: str, raw: bytes) -> model.Checkpoint:
        document_raw, _, writes_raw = raw.partition(WRITES_SEPARATOR)
        document = _load(document_raw, "document")
        if not isinstance(document, dict):
            raise exceptions.DecodeError("document: not a JSON object")
        checkpoint = document.get("checkpoint")
        if checkpoint is None:  # only has_writes merged so far: the JSON.SET follows
            raise exceptions.NotReadyError()
        if not isinstance(checkpoint, dict):
            raise exceptions.DecodeError("checkpoint: not an object")
        writes = _load(writes_raw, "writes") if writes_raw else []
        return self._checkpoint(key, document, checkpoint, writes)

    def _checkpoint(
        self, key: str, document: dict[str, Any], checkpoint: dict[str, Any], writes: Any
    ) -> model.Checkpoint:
        thread = _text(document.get("thread_id"), "thread_id")
        if document.get("checkpoint_ns") not in (ROOT_NS, ""):
            raise exceptions.DecodeError("checkpoint_ns: not the root namespace")
        values = checkpoint.get("channel_values") or {}
        if not isinstance(values, dict):
            raise exceptions.DecodeError("checkpoint.channel_values: not an object")
        ident = _text(document.get("checkpoint_id") or checkpoint.get("id"), "checkpoint_id")
        mapped = self.mapping.of(thread, values)
        messages = _messages(values.get("messages"), "channel_values.messages")
        pending = _pending_messages(writes, ident)
        decoded = codecs.decode_document(
            key,
            {
                "conversation_id": mapped.get("conversation_id", thread),
                "tenant_id": mapped.get("tenant_id", self.options.default_tenant),
                "customer_id": mapped.get("customer_id"),
                "user_id": mapped.get("user_id"),
                "messages": messages + pending,
            },
            key_conversation_id=thread,
            key_time=_checkpoint_time(checkpoint),
            options=self.options,
        )
        return _with_origin(decoded, ident, _step(document))

    # --- O(N) rows for a thread of N checkpoints: skip messages archived already

    def unseen(self, checkpoints: Sequence[model.Checkpoint]) -> list[model.Checkpoint]:
        """The checkpoints less the messages this process archived already for their thread,
        or that an earlier checkpoint of the batch holds (every checkpoint repeats the
        thread's whole list; PostgreSQL would skip them, but only after receiving them all)."""
        batch: set[bytes] = set()
        return [self._unseen(c, batch) for c in checkpoints]

    def _unseen(self, c: model.Checkpoint, batch: set[bytes]) -> model.Checkpoint:
        fresh = []
        for m in c.messages:
            identity = _identity(c, m)
            if identity not in self._archived and identity not in batch:
                batch.add(identity)
                fresh.append(m)
        if len(fresh) == len(c.messages):
            return c
        return model.Checkpoint(
            c.source_key, c.conversation_id, c.tenant_id, c.customer_id, c.user_id, tuple(fresh)
        )

    def remember(self, checkpoints: Sequence[model.Checkpoint]) -> None:
        """These checkpoints' messages are committed: remember them (bounded, oldest out)."""
        for c in checkpoints:
            for m in c.messages:
                self._archived[_identity(c, m)] = None
        while len(self._archived) > REMEMBERED_IDS:
            self._archived.popitem(last=False)


def _identity(c: model.Checkpoint, m: model.Message) -> bytes:
    """(tenant, conversation, message key) in 16 bytes (BLAKE2b-128: no collision in practice;
    a collision would skip a message, which is why it is not Python's 64-bit hash)."""
    text = f"{c.tenant_id}\x00{c.conversation_id}\x00{m.key}".encode("utf-8", "surrogatepass")
    return hashlib.blake2b(text, digest_size=16).digest()


def _load(raw: bytes, what: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise exceptions.DecodeError(f"{what}: not JSON") from None


def _text(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise exceptions.DecodeError(f"{name}: missing or not a string")
    return value


def _messages(items: object, path: str) -> list[Any]:
    """The conversation's messages of a channel value (RemoveMessage markers are not)."""
    if items is None:
        return []
    if isinstance(items, dict):
        items = [items]
    if not isinstance(items, list):
        raise exceptions.DecodeError(f"{path}: not a list")
    return [item for item in items if not _is_removal(item)]


def _is_removal(item: object) -> bool:
    if not isinstance(item, dict):
        return False
    kwargs = item.get("kwargs")
    return isinstance(kwargs, dict) and kwargs.get("type") == "remove"


def _pending_messages(writes: Any, checkpoint_id: str) -> list[Any]:
    """Messages of pending writes on the `messages` channel of this checkpoint (blob: base64
    of JSON). They have no id yet: they are keyed by their content (codecs)."""
    if not isinstance(writes, list):
        raise exceptions.DecodeError("writes: not a list")
    found: list[Any] = []
    for index, write in enumerate(writes):
        if not isinstance(write, dict) or write.get("channel") != "messages":
            continue
        if write.get("checkpoint_id") != checkpoint_id:
            continue  # ShallowRedisSaver's registry lists older checkpoints' writes too
        if write.get("type") != "json":
            raise exceptions.DecodeError(f"writes[{index}]: a {write.get('type')!r} blob")
        found += _messages(_blob(write.get("blob"), index), f"writes[{index}].blob")
    return found


def _blob(value: object, index: int) -> Any:
    if not isinstance(value, str):
        raise exceptions.DecodeError(f"writes[{index}].blob: not a string")
    try:
        return orjson.loads(base64.b64decode(value, validate=True))
    except (binascii.Error, orjson.JSONDecodeError):
        raise exceptions.DecodeError(f"writes[{index}].blob: not base64 of JSON") from None


def _checkpoint_time(checkpoint: dict[str, Any]) -> datetime:
    stamp = checkpoint.get("ts")
    if not isinstance(stamp, str):
        raise exceptions.DecodeError("checkpoint.ts: missing")
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        raise exceptions.DecodeError("checkpoint.ts: not an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _step(document: dict[str, Any]) -> int | None:
    metadata = document.get("metadata")
    if isinstance(metadata, str):  # the full savers keep it as a JSON string
        try:
            metadata = orjson.loads(metadata)
        except orjson.JSONDecodeError:
            return None
    step = metadata.get("step") if isinstance(metadata, dict) else document.get("step")
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def _with_origin(
    checkpoint: model.Checkpoint, checkpoint_id: str, step: int | None
) -> model.Checkpoint:
    """Each message's metadata says which checkpoint (id and step) it was archived from."""
    origin: dict[str, Any] = {"checkpoint_id": checkpoint_id, "checkpoint_step": step}
    messages = tuple(m._replace(metadata={**m.metadata, **origin}) for m in checkpoint.messages)
    return model.Checkpoint(
        checkpoint.source_key, checkpoint.conversation_id, checkpoint.tenant_id,
        checkpoint.customer_id, checkpoint.user_id, messages,
    )  # fmt: skip

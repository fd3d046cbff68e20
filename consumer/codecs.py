"""Decode checkpoint payloads (seed JSON, LangChain forms, restricted pickles) into Checkpoints.

Error messages name the field or position and the problem, never the payload's content.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from typing import Any, ClassVar, Final
from zoneinfo import ZoneInfo

import orjson

from consumer import model
from consumer.exceptions import DecodeError

__all__ = ["PICKLE_REFUSED", "CodecOptions", "decode", "is_pickle"]

PICKLE_REFUSED: Final = (
    "pickle payload refused; set ARCHIVER_ALLOW_PICKLE=1 to admit restricted pickles"
)

_PICKLE_MARK: Final = b"\x80"
_MIN_YEAR: Final = 1970
_MAX_YEAR: Final = 2199
_MAX_METADATA_DEPTH: Final = 200
_HASH_CHARS: Final = 32
_SEPARATOR: Final = "\x1f"
_STAMP_CACHE_SIZE: Final = 8192
_STAMP_CACHE_CHARS: Final = 64  # longer texts (fractions of any length parse) are not cached
_CACHEABLE_ZONES: Final = (timezone, ZoneInfo)  # hashable, and equal ones convert alike

_ROLES: Final[dict[str, str]] = {
    "user": "user",
    "assistant": "assistant",
    "system": "system",
    "tool": "tool",
    "human": "user",
    "ai": "assistant",
}
_LANGCHAIN_ROLES: Final[dict[str, str]] = {
    "human": "user",
    "ai": "assistant",
    "system": "system",
    "tool": "tool",
    "function": "tool",
}
_LANGCHAIN_SUFFIX: Final = re.compile(r"(MessageChunk|Message|Chunk)$")
_LANGCHAIN_NOT_METADATA: Final = frozenset({"content", "type", "id", "timestamp"})
_CHECKPOINT_FIELDS: Final = frozenset(
    {"conversation_id", "tenant_id", "customer_id", "user_id", "conversation_summary", "messages"}
)
_SEED_FIELDS: Final = frozenset({"role", "content", "timestamp", "metadata", "id"})


@dataclass(frozen=True, slots=True)
class CodecOptions:
    """How payloads are decoded; `timezone` is applied to naive timestamps."""

    timezone: tzinfo = UTC
    allow_pickle: bool = False
    default_tenant: str = "default"
    max_payload_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class _Context:
    """What every message decoder needs besides the message itself."""

    key_conversation_id: str
    key_time: datetime
    options: CodecOptions


@dataclass(frozen=True, slots=True)
class _Draft:
    """A decoded message still waiting for its identity key."""

    role: str
    content: str
    timestamp: datetime
    stamp: str  # the timestamp's ISO text for the key; "" when the payload gave none
    metadata: dict[str, Any]
    ident: str | None


@dataclass(frozen=True, slots=True)
class _Refused:
    """Why a timestamp text is refused; `caught` if an exception said so (raised from None)."""

    problem: str
    caught: bool


_NOT_ISO: Final = "not an ISO 8601 string"
_NOT_PARSED: Final = _Refused(_NOT_ISO, caught=True)
_YEAR_OVERFLOW: Final = _Refused(f"year out of range {_MIN_YEAR}..{_MAX_YEAR}", caught=True)
_YEAR_OUTSIDE: Final = _Refused(f"year out of range {_MIN_YEAR}..{_MAX_YEAR}", caught=False)


@dataclass(frozen=True, slots=True)
class _LangChainForm:
    """A LangChain message (constructor or typed form) reduced to its common parts."""

    kind: str
    kind_path: str
    fields: dict[str, Any]
    fields_path: str
    extra: dict[str, Any]


def decode(
    source_key: str,
    raw: bytes,
    *,
    key_conversation_id: str,
    key_time: datetime,
    options: CodecOptions,
) -> model.Checkpoint:
    """Decode one checkpoint value; raises DecodeError (and nothing else) when it is invalid."""
    try:
        return _decode(source_key, raw, _Context(key_conversation_id, _as_utc(key_time), options))
    except DecodeError:
        raise
    except Exception as exc:
        # The cause is dropped on purpose: its message may quote the payload.
        raise DecodeError(f"unexpected {type(exc).__name__} while decoding") from None


def decode_document(
    source_key: str,
    document: object,
    *,
    key_conversation_id: str,
    key_time: datetime,
    options: CodecOptions,
) -> model.Checkpoint:
    """Decode a parsed seed-format document (another source builds one from its own format);
    raises DecodeError (and nothing else) when it is invalid."""
    try:
        ctx = _Context(key_conversation_id, _as_utc(key_time), options)
        return _general_checkpoint(source_key, document, ctx)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"unexpected {type(exc).__name__} while decoding") from None


def _decode(source_key: str, raw: bytes, ctx: _Context) -> model.Checkpoint:
    limit = ctx.options.max_payload_bytes
    if len(raw) > limit:
        raise DecodeError(f"payload: {len(raw)} bytes is over the limit of {limit}")
    if is_pickle(raw):
        return _checkpoint(source_key, _load_pickle(raw, ctx.options), ctx)
    return _checkpoint(source_key, _load_json(raw), ctx, raw)


def is_pickle(raw: bytes) -> bool:
    """Whether a payload is a pickle (protocol 2 or later), by its first byte."""
    return raw[:1] == _PICKLE_MARK


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is UTC:  # a key's time, always
        return moment
    if moment.utcoffset() is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


# --- payload formats -----------------------------------------------------------------------------


_WIDE = 2.0**63  # orjson reads integer literals outside 64 bits as floats of this size or more


def _load_json(raw: bytes) -> object:
    """The parsed document; `_checkpoint` checks it for integers beyond 64 bits."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise DecodeError(f"payload: not valid JSON ({exc.msg}) at {where}") from None


def _has_wide_float(document: object) -> bool:
    """Whether any number is a float at least 2**63 in size (cheap: a walk, no regex).

    The document holds only what orjson builds: exact dicts, lists, strings and numbers.
    """
    if type(document) is not dict and type(document) is not list:
        return type(document) is float and not -_WIDE < document < _WIDE
    stack: list[Any] = [document]
    while stack:
        node = stack.pop()
        for value in node.values() if type(node) is dict else node:
            kind = type(value)
            if kind is dict or kind is list:
                stack.append(value)
            elif kind is float and not -_WIDE < value < _WIDE:
                return True
    return False


def _refuse_wide_integers(raw: bytes) -> None:
    """orjson reads integers beyond 64 bits as floats, silently rounded: refuse those payloads
    (the stdlib parser, slower, runs only when a long run of digits appears)."""

    def check(literal: str) -> int:
        value = int(literal)
        if not -(2**63) <= value < 2**64:
            raise DecodeError("payload: an integer beyond 64 bits would be rounded")
        return value

    json.loads(raw, parse_int=check)


def _load_pickle(raw: bytes, options: CodecOptions) -> object:
    """Unpickle with only datetime values admitted, within opcode and container limits, then
    reduce the result to plain JSON values."""
    if not options.allow_pickle:
        raise DecodeError(PICKLE_REFUSED)
    try:
        loaded: object = _RestrictedUnpickler(io.BytesIO(raw)).load()
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"pickle payload: cannot be unpickled ({type(exc).__name__})") from None
    _check_json_size(loaded, limit=options.max_payload_bytes, pickled_bytes=len(raw))
    try:
        return orjson.loads(
            orjson.dumps(loaded, default=_pickled_value, option=orjson.OPT_PASSTHROUGH_SUBCLASS)
        )
    except orjson.JSONEncodeError:
        raise DecodeError("pickle payload: holds a value with no JSON form") from None


def _latin1_encode(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """Stand-in for `_codecs.encode`, which protocol 2 pickles use to carry datetime bytes."""
    if encoding != "latin1" or errors != "strict":
        raise DecodeError("pickle payload refused: _codecs.encode is admitted for latin1 only")
    return text.encode("latin1")


class _PickledSet(list[Any]):
    """A pickled set or frozenset, kept as a list: building a real set hashes its items, and
    integers chosen to collide make that quadratic (0.7 MB of them: 19 s). Its JSON form is
    what a set's always was: the distinct items, sorted by repr (`_pickled_value`)."""


def _as_set(items: Any = ()) -> _PickledSet:
    return _PickledSet(items)


_PICKLE_GLOBALS: Final[dict[tuple[str, str], Any]] = {
    ("datetime", "datetime"): datetime,
    ("datetime", "date"): date,
    ("datetime", "time"): time,
    ("datetime", "timedelta"): timedelta,
    ("datetime", "timezone"): timezone,
    ("builtins", "set"): _as_set,
    ("builtins", "frozenset"): _as_set,
    ("__builtin__", "set"): _as_set,
    ("__builtin__", "frozenset"): _as_set,
    ("_codecs", "encode"): _latin1_encode,
}

# Limits of one unpickling. Memory grows by at most one object per opcode (strings are slices
# of the payload, which is itself bounded), and containers are the large objects: a 60 MB
# pickle of EMPTY_DICT opcodes otherwise builds 60 million dicts (4.7 GB). A checkpoint of
# 100,000 messages takes about 2.5 million opcodes and 200,000 containers.
PICKLE_MAX_OPCODES: Final = 5_000_000
PICKLE_MAX_CONTAINERS: Final = 1_000_000
_CONTAINER_OPCODES: Final = frozenset(
    op[0] for op in (
        pickle.EMPTY_DICT, pickle.EMPTY_LIST, pickle.EMPTY_TUPLE, pickle.EMPTY_SET, pickle.DICT,
        pickle.LIST, pickle.TUPLE, pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3, pickle.FROZENSET,
        pickle.MARK, pickle.REDUCE, pickle.NEWOBJ, pickle.NEWOBJ_EX, pickle.OBJ, pickle.INST,
    )
)  # fmt: skip


class _RestrictedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler, bounded: only the globals in `_PICKLE_GLOBALS` resolve, each
    opcode is counted (and containers apart) against the limits above, dict keys must be
    strings (JSON's; other keys could be made to collide), and sets are built as lists.
    About 5x slower than the C unpickler, which offers none of these hooks; the archiver runs
    it in a thread, off the event loop."""

    dispatch: ClassVar[dict[int, Callable[[pickle.Unpickler], None]]] = {}
    # The pure-Python unpickler's own state, which typeshed does not declare:
    stack: list[Any]
    append: Callable[[Any], None]
    pop_mark: Callable[[], list[Any]]

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file)
        self.opcodes = 0
        self.containers = 0

    def find_class(self, module: str, name: str, /) -> Any:
        admitted = _PICKLE_GLOBALS.get((module, name))
        if admitted is None:
            refused = ascii(f"{module}.{name}"[:200])
            raise DecodeError(f"pickle payload refused: global {refused} is not admitted")
        return admitted

    def count(self, opcode: int) -> None:
        self.opcodes += 1
        if opcode in _CONTAINER_OPCODES:
            self.containers += 1
            if self.containers > PICKLE_MAX_CONTAINERS:
                raise DecodeError(f"pickle payload: over {PICKLE_MAX_CONTAINERS} containers")
        if self.opcodes > PICKLE_MAX_OPCODES:
            raise DecodeError(f"pickle payload: over {PICKLE_MAX_OPCODES} opcodes")

    def set_items(self, pairs: list[Any], target: Any) -> None:
        if isinstance(target, dict):
            for key in pairs[::2]:
                if type(key) is not str:
                    raise DecodeError("pickle payload: a dict key is not a string")
        for i in range(0, len(pairs), 2):
            target[pairs[i]] = pairs[i + 1]


def _counted(opcode: int, handler: Callable[[Any], None]) -> Callable[[Any], None]:
    def run(self: _RestrictedUnpickler) -> None:
        self.count(opcode)
        handler(self)

    return run


def _setitem(self: _RestrictedUnpickler) -> None:
    value = self.stack.pop()
    key = self.stack.pop()
    self.set_items([key, value], self.stack[-1])


def _setitems(self: _RestrictedUnpickler) -> None:
    items = self.pop_mark()
    self.set_items(items, self.stack[-1])


def _empty_set(self: _RestrictedUnpickler) -> None:
    self.append(_PickledSet())


def _additems(self: _RestrictedUnpickler) -> None:
    items = self.pop_mark()
    target = self.stack[-1]
    if not isinstance(target, _PickledSet):
        raise DecodeError("pickle payload: ADDITEMS on something that is not a set")
    target.extend(items)


def _frozenset(self: _RestrictedUnpickler) -> None:
    items = self.pop_mark()  # first: it switches `append` back to the outer stack
    self.append(_PickledSet(items))


_OVERRIDES: Final[dict[bytes, Callable[[Any], None]]] = {
    pickle.SETITEM: _setitem, pickle.SETITEMS: _setitems, pickle.EMPTY_SET: _empty_set,
    pickle.ADDITEMS: _additems, pickle.FROZENSET: _frozenset,
}  # fmt: skip
_RestrictedUnpickler.dispatch = {
    op: _counted(op, _OVERRIDES.get(bytes([op]), handler))
    for op, handler in pickle._Unpickler.dispatch.items()
}


def _check_json_size(root: object, *, limit: int, pickled_bytes: int) -> None:
    """Refuse a pickle whose JSON form would exceed the payload limit.

    Pickles share objects by reference, so a small payload can expand exponentially (or
    forever, if cyclic). Unshared, each visited node costs at least one pickled byte: the
    walk is iterative and stops once the visits or the estimated size are over.
    """
    stack: list[object] = [root]
    size = visits = 0
    while stack:
        node = stack.pop()
        size, visits = size + _json_size(node), visits + 1
        if size > limit:
            raise DecodeError(f"pickle payload: its JSON form would exceed the limit of {limit}")
        if visits > 4 * pickled_bytes + 4096:
            raise DecodeError("pickle payload: shared or cyclic references expand it too far")
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list | tuple | set | frozenset):
            stack.extend(node)


def _json_size(node: object) -> int:
    """About the size of a node's own JSON text (a container's items are counted apart)."""
    if isinstance(node, str | bytes):
        return len(node) + 3
    if isinstance(node, int):
        return node.bit_length() // 3 + 2
    if isinstance(node, float):
        return 24
    if isinstance(node, date | time | timedelta):
        return 34
    return 4


def _pickled_value(value: object) -> object:
    """orjson `default`: the pickled values JSON lacks (datetimes are native to orjson)."""
    if isinstance(value, _PickledSet):
        return sorted({repr(item): item for item in value}.values(), key=repr)
    if isinstance(value, timedelta):
        return value.total_seconds()
    raise TypeError


# --- checkpoint ----------------------------------------------------------------------------------


def _checkpoint(
    source_key: str, document: object, ctx: _Context, json_raw: bytes | None = None
) -> model.Checkpoint:
    """The checkpoint a document holds; `json_raw`, the JSON it was parsed from, is checked for
    integers beyond 64 bits (before any field) unless the fast path saw no wide number."""
    checkpoint = _fast_checkpoint(source_key, document, ctx)
    if checkpoint is not None:
        return checkpoint
    if json_raw is not None and _has_wide_float(document):
        _refuse_wide_integers(json_raw)
    return _general_checkpoint(source_key, document, ctx)


def _general_checkpoint(source_key: str, document: object, ctx: _Context) -> model.Checkpoint:
    if not isinstance(document, dict):
        raise DecodeError("payload: not a JSON object")
    return model.Checkpoint(
        source_key=source_key,
        conversation_id=_required_text(document, "conversation_id", ctx.key_conversation_id),
        tenant_id=_required_text(document, "tenant_id", ctx.options.default_tenant),
        customer_id=_optional_id(document.get("customer_id"), "customer_id"),
        user_id=_optional_id(document.get("user_id"), "user_id"),
        messages=_messages(document, ctx),
    )


def _required_text(document: dict[str, Any], name: str, fallback: str) -> str:
    value = document.get(name)
    if value is None:
        value = fallback
    if not isinstance(value, str):
        raise DecodeError(f"{name}: not a string")
    if not value:
        raise DecodeError(f"{name}: empty")
    _refuse_nul(value, name)
    return value


def _optional_id(value: object, path: str) -> str | None:
    """A string or integer identifier; absent, null or "" is None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise DecodeError(f"{path}: not a string or integer")
    text = str(value)
    _refuse_nul(text, path)
    return text or None


def _refuse_nul(text: str, path: str) -> None:
    if "\x00" in text:
        raise DecodeError(f"{path}: contains NUL")


def _messages(document: dict[str, Any], ctx: _Context) -> tuple[model.Message, ...]:
    if "messages" not in document:
        raise DecodeError("messages: missing")
    items = document["messages"]
    if not isinstance(items, list):
        raise DecodeError("messages: not a list")
    drafts = [_draft(item, f"messages[{index}]", ctx) for index, item in enumerate(items)]
    messages = _with_keys(drafts)
    summary = _summary(document.get("conversation_summary"), ctx)
    return messages if summary is None else (summary, *messages)


def _summary(value: object, ctx: _Context) -> model.Message | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise DecodeError("conversation_summary: not a string")
    content, encoding = _encode_nul(value)
    digest = hashlib.sha256(value.encode()).hexdigest()[:_HASH_CHARS]
    metadata: dict[str, Any] = {"summary": True, "timestamp_source": "checkpoint", **encoding}
    return model.Message(f"summary:{digest}", "system", content, ctx.key_time, metadata)


# --- fast path -----------------------------------------------------------------------------------
#
# Most checkpoints are seed messages with string content: the fast path decodes those without the
# general path's per-field error paths and intermediate drafts. It never raises for bad input and
# returns only what the general path would return for the same document: at the least doubt it
# returns None, and the general path decodes the document again, finding and naming any problem.
# It also looks at every number in the document, so a document it returns for has no wide float.


def _fast_checkpoint(source_key: str, document: object, ctx: _Context) -> model.Checkpoint | None:
    if type(document) is not dict:
        return None
    items, summary = document.get("messages"), document.get("conversation_summary")
    if type(items) is not list or not (summary is None or type(summary) is str):
        return None
    messages = _fast_messages(items, ctx)  # first: most documents it leaves are left here
    if messages is None or not _no_wide_extras(document, _CHECKPOINT_FIELDS):
        return None
    try:
        conversation_id = _required_text(document, "conversation_id", ctx.key_conversation_id)
        tenant_id = _required_text(document, "tenant_id", ctx.options.default_tenant)
        customer_id = _optional_id(document.get("customer_id"), "customer_id")
        user_id = _optional_id(document.get("user_id"), "user_id")
    except DecodeError:
        return None
    first = _summary(summary, ctx)
    if first is not None:
        messages = (first, *messages)
    return model.Checkpoint(source_key, conversation_id, tenant_id, customer_id, user_id, messages)


def _no_wide_extras(fields: dict[str, Any], known: frozenset[str]) -> bool:
    """Whether the fields outside `known`, which decoding ignores, hold no wide number (the
    known fields are checked as they are decoded)."""
    if fields.keys() <= known:
        return True
    return not any(_has_wide_float(value) for name, value in fields.items() if name not in known)


def _fast_messages(items: list[Any], ctx: _Context) -> tuple[model.Message, ...] | None:
    """Seed messages with string content; one loop, no drafts.

    Each message without id is keyed as its signature's first occurrence: a signature that
    recurs gives a repeated key, and the general path then counts occurrences.
    """
    zone, key_time = ctx.options.timezone, ctx.key_time
    parse = _cached_stamp if type(zone) in _CACHEABLE_ZONES else _parse_stamp
    keys: list[str] = []
    messages: list[model.Message] = []
    for item in items:
        if type(item) is not dict:
            return None
        role, content, given = item.get("role"), item.get("content"), item.get("timestamp")
        if type(given) is str and len(given) <= _STAMP_CACHE_CHARS:
            stamped = parse(given, zone)
        else:
            stamped = (key_time, "") if given is None else _NOT_PARSED
        role = _ROLES.get(role) if type(role) is str else None
        if (
            role is None
            or type(content) is not str
            or "\x00" in content
            or isinstance(stamped, _Refused)
        ):
            return None
        only_required = len(item) == 3 and given is not None  # role, content and timestamp
        if not (only_required or item.keys() <= _SEED_FIELDS or _plain_extras(item)):
            return None
        timestamp, stamp = stamped
        metadata = item.get("metadata")
        metadata = {} if metadata is None and stamp else _fast_metadata(metadata, known=bool(stamp))
        ident = item.get("id")
        key = (
            _hash_key(role, stamp, content, 0)
            if ident is None
            else _id_key(ident, role, stamp, content)
        )
        if metadata is None or key is None:
            return None
        keys.append(key)
        messages.append(model.Message(key, role, content, timestamp, metadata))
    return tuple(messages) if len(set(keys)) == len(keys) else None


def _plain_extras(item: dict[str, Any]) -> bool:
    """Whether a seed message's unknown fields are ignored by the general path, wide-free."""
    return "lc" not in item and _no_wide_extras(item, _SEED_FIELDS)


def _fast_metadata(value: object, *, known: bool) -> dict[str, Any] | None:
    """What `_metadata` and the markers make of a seed message's metadata (with string content
    and a timestamp `known` or not), or None for the general path."""
    if value is None:
        metadata: dict[str, Any] = {}
    elif type(value) is dict and _storable_metadata(value):
        metadata = dict(value)
    else:
        return None
    if not known:
        if metadata.get("timestamp_source", "checkpoint") != "checkpoint":
            return None
        metadata["timestamp_source"] = "checkpoint"
    return metadata


def _storable_metadata(metadata: dict[Any, Any]) -> bool:
    """`_storable(metadata, 0)`, quicker for the usual flat object of strings."""
    for name, value in metadata.items():
        if type(name) is not str or "\x00" in name:
            return False
        if type(value) is str:
            if "\x00" in value:
                return False
        elif not _storable(value, 1):
            return False
    return True


def _storable(value: object, depth: int) -> bool:
    """Whether `_check_storable` passes a metadata value, and it holds no wide float."""
    if depth > _MAX_METADATA_DEPTH:
        return False
    if type(value) is str:
        return "\x00" not in value
    if type(value) is dict:
        return all(
            type(name) is str and "\x00" not in name and _storable(item, depth + 1)
            for name, item in value.items()
        )
    if type(value) is list:
        return all(_storable(item, depth + 1) for item in value)
    if type(value) is float:
        return -_WIDE < value < _WIDE
    return value is None or type(value) is int or type(value) is bool


def _id_key(ident: object, role: str, stamp: str, content: str) -> str | None:
    """The key of a message with an `id` field (an empty id is none), None if it is invalid."""
    try:
        text = _optional_id(ident, "id")
    except DecodeError:
        return None
    return _hash_key(role, stamp, content, 0) if text is None else f"id:{text}"


# --- identity ------------------------------------------------------------------------------------


def _with_keys(drafts: list[_Draft]) -> tuple[model.Message, ...]:
    """Give each draft its key; a repeated id is refused since one key must mean one message."""
    occurrences: dict[tuple[str, str, str], int] = {}
    first_index: dict[str, int] = {}
    messages: list[model.Message] = []
    for index, draft in enumerate(drafts):
        key = _key(draft, occurrences)
        if key in first_index:
            raise DecodeError(
                f"messages[{index}].id: repeats the id of messages[{first_index[key]}]"
            )
        first_index[key] = index
        messages.append(
            model.Message(key, draft.role, draft.content, draft.timestamp, draft.metadata)
        )
    return tuple(messages)


def _key(draft: _Draft, occurrences: dict[tuple[str, str, str], int]) -> str:
    if draft.ident is not None:
        return f"id:{draft.ident}"
    signature = (draft.role, draft.stamp, draft.content)
    occurrence = occurrences.get(signature, 0)
    occurrences[signature] = occurrence + 1
    return _hash_key(*signature, occurrence)


def _hash_key(role: str, stamp: str, content: str, occurrence: int) -> str:
    """The key of a message without id: a hash of role, ISO timestamp ("" if the payload gave
    none), content and how many messages with these three came before it in the checkpoint."""
    joined = f"{role}{_SEPARATOR}{stamp}{_SEPARATOR}{content}{_SEPARATOR}{occurrence}"
    return "h:" + hashlib.sha256(joined.encode()).hexdigest()[:_HASH_CHARS]


# --- messages ------------------------------------------------------------------------------------


def _draft(item: object, path: str, ctx: _Context) -> _Draft:
    if not isinstance(item, dict):
        raise DecodeError(f"{path}: not an object")
    if "lc" in item:
        return _langchain_draft(_constructor_form(item, path), ctx)
    if "data" in item and "type" in item and "role" not in item:
        return _langchain_draft(_typed_form(item, path), ctx)
    return _seed_draft(item, path, ctx)


def _seed_draft(item: dict[str, Any], path: str, ctx: _Context) -> _Draft:
    role = _role(item.get("role"), f"{path}.role")
    content, content_metadata = _content(item.get("content"), f"{path}.content")
    timestamp, stamp = _timestamp(item.get("timestamp"), f"{path}.timestamp", ctx)
    metadata = _metadata(item.get("metadata"), f"{path}.metadata")
    _mark(metadata, content_metadata, f"{path}.metadata")
    return _Draft(
        role=role,
        content=content,
        timestamp=timestamp,
        stamp=stamp,
        metadata=_with_timestamp_source(metadata, known=bool(stamp)),
        ident=_optional_id(item.get("id"), f"{path}.id"),
    )


def _constructor_form(item: dict[str, Any], path: str) -> _LangChainForm:
    if item.get("type") != "constructor":
        raise DecodeError(f"{path}.type: not a LangChain constructor")
    class_path = item.get("id")
    if not isinstance(class_path, list) or not class_path:
        raise DecodeError(f"{path}.id: not a LangChain class path")
    if not all(isinstance(part, str) for part in class_path):
        raise DecodeError(f"{path}.id: not a LangChain class path")
    kwargs = item.get("kwargs")
    if not isinstance(kwargs, dict):
        raise DecodeError(f"{path}.kwargs: not an object")
    extra = {"lc_id": list(class_path)}
    return _LangChainForm(class_path[-1], f"{path}.id", kwargs, f"{path}.kwargs", extra)


def _typed_form(item: dict[str, Any], path: str) -> _LangChainForm:
    kind = item["type"]
    if not isinstance(kind, str):
        raise DecodeError(f"{path}.type: not a string")
    data = item["data"]
    if not isinstance(data, dict):
        raise DecodeError(f"{path}.data: not an object")
    return _LangChainForm(kind, f"{path}.type", data, f"{path}.data", {})


def _langchain_draft(form: _LangChainForm, ctx: _Context) -> _Draft:
    fields, path = form.fields, form.fields_path
    role = _langchain_role(form)
    content, content_metadata = _content(fields.get("content"), f"{path}.content")
    timestamp, stamp = _timestamp(_langchain_timestamp(fields), f"{path}.timestamp", ctx)
    rest = {
        name: value
        for name, value in fields.items()
        if name not in _LANGCHAIN_NOT_METADATA and value is not None
    }
    metadata = _metadata({**rest, "format": "langchain", **form.extra}, path)
    _mark(metadata, content_metadata, path)
    return _Draft(
        role=role,
        content=content,
        timestamp=timestamp,
        stamp=stamp,
        metadata=_with_timestamp_source(metadata, known=bool(stamp)),
        ident=_optional_id(fields.get("id"), f"{path}.id"),
    )


def _langchain_role(form: _LangChainForm) -> str:
    name = _LANGCHAIN_SUFFIX.sub("", form.kind).lower()
    if name == "chat":
        return _role(form.fields.get("role"), f"{form.fields_path}.role")
    role = _LANGCHAIN_ROLES.get(name)
    if role is None:
        raise DecodeError(f"{form.kind_path}: not a supported LangChain message type")
    return role


def _langchain_timestamp(fields: dict[str, Any]) -> object:
    stamp = fields.get("timestamp")
    if stamp is not None:
        return stamp
    extra = fields.get("additional_kwargs")
    return extra.get("timestamp") if isinstance(extra, dict) else None


# --- fields --------------------------------------------------------------------------------------


def _role(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise DecodeError(f"{path}: not a string")
    role = _ROLES.get(value)
    if role is None:
        raise DecodeError(f"{path}: not one of user, assistant, system, tool, human, ai")
    return role


def _content(value: object, path: str) -> tuple[str, dict[str, Any]]:
    """The content as text, plus the metadata that says how it was stored."""
    if isinstance(value, str):
        return _encode_nul(value)
    if isinstance(value, list | dict):
        try:
            text = orjson.dumps(value).decode()
        except orjson.JSONEncodeError:
            raise DecodeError(f"{path}: content blocks cannot be stored as JSON") from None
        return text, {"content_type": "json"}
    raise DecodeError(f"{path}: not a string, list or object")


def _encode_nul(text: str) -> tuple[str, dict[str, Any]]:
    """PostgreSQL text cannot hold NUL: such content is kept as base64 of its UTF-8."""
    if "\x00" not in text:
        return text, {}
    return base64.b64encode(text.encode()).decode("ascii"), {"content_encoding": "base64"}


def _timestamp(value: object, path: str, ctx: _Context) -> tuple[datetime, str]:
    """The UTC timestamp and its ISO text, or the checkpoint's key time and "" if not given."""
    if value is None:
        return ctx.key_time, ""
    if not isinstance(value, str):
        raise DecodeError(f"{path}: {_NOT_ISO}")
    parsed = _utc_stamp(value, ctx.options.timezone)
    if isinstance(parsed, _Refused):
        error = DecodeError(f"{path}: {parsed.problem}")
        if parsed.caught:
            raise error from None
        raise error
    return parsed


def _utc_stamp(value: str, zone: tzinfo) -> tuple[datetime, str] | _Refused:
    """`_parse_stamp`, from a cache when the zone's type is known to be safe to cache on."""
    if type(zone) in _CACHEABLE_ZONES and len(value) <= _STAMP_CACHE_CHARS:
        return _cached_stamp(value, zone)
    return _parse_stamp(value, zone)


def _parse_stamp(value: str, zone: tzinfo) -> tuple[datetime, str] | _Refused:
    """The UTC moment of an ISO 8601 text (naive ones are in `zone`) and the moment's own ISO
    text, or the problem with it: not ISO 8601, or a year out of range."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return _NOT_PARSED
    if moment.utcoffset() is None:
        moment = moment.replace(tzinfo=zone)
    try:
        moment = moment.astimezone(UTC)
    except (OverflowError, ValueError):
        return _YEAR_OVERFLOW
    if not _MIN_YEAR <= moment.year <= _MAX_YEAR:
        return _YEAR_OUTSIDE
    return moment, moment.isoformat()


# A checkpoint repeats the messages of the ones before it: their timestamps recur.
_cached_stamp: Final = functools.lru_cache(maxsize=_STAMP_CACHE_SIZE)(_parse_stamp)


def _with_timestamp_source(metadata: dict[str, Any], *, known: bool) -> dict[str, Any]:
    if not known:
        _mark(metadata, {"timestamp_source": "checkpoint"}, "metadata")
    return metadata


def _mark(metadata: dict[str, Any], markers: dict[str, Any], path: str) -> None:
    """Add the archiver's markers; an agent key of the same name with another value would be
    lost, so such a payload is refused (dead-lettered with its raw bytes) instead."""
    for name, value in markers.items():
        if name in metadata and metadata[name] != value:
            raise DecodeError(f"{path}.{name}: the archiver needs this key for its own marker")
        metadata[name] = value


def _metadata(value: object, path: str) -> dict[str, Any]:
    """A shallow copy of a metadata object, checked to be storable as jsonb."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DecodeError(f"{path}: not an object")
    _check_storable(value, path, depth=0)
    return dict(value)


def _check_storable(value: object, path: str, *, depth: int) -> None:
    if depth > _MAX_METADATA_DEPTH:
        raise DecodeError(f"{path}: nested more than {_MAX_METADATA_DEPTH} levels")
    if isinstance(value, str):
        _refuse_nul(value, path)
    elif isinstance(value, dict):
        for name, item in value.items():
            _refuse_nul(name, path)
            _check_storable(item, path, depth=depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_storable(item, path, depth=depth + 1)

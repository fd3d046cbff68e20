"""Adversarial input: whatever sits under a checkpoint key ends archived losslessly or
dead-lettered with its raw bytes, the key gone, and one bad input never blocks the others.

A property-based part (hypothesis) generates well-formed checkpoints (checked against an
oracle written here, independent of consumer/codecs.py) and hostile ones (checked against
the reference decoder: archived exactly as decoded, or dead-lettered), mixed in batches. A
corpus part covers named hostile payloads, including pickles crafted to run code.

Every input tried is counted; the counts go to $TMPDIR/archiver-adversarial.json.
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import json
import os
import pickle
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer import codecs, keys, model, producer, service
from consumer.exceptions import DecodeError
from tests.conftest import MakeSettings

P = producer.Producer(ttl=60, archive_after=30)
NOW_DUE = 10**9
TRIED: Counter[str] = Counter()
REPORT = Path(tempfile.gettempdir()) / "archiver-adversarial.json"
HYPOTHESIS = settings(
    deadline=None,
    database=None,
    max_examples=75,
    report_multiple_bugs=False,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
ROW_SQL = """
SELECT tenant_id, conversation_id, message_key, message_role, message_content, "timestamp",
       metadata, customer_id, user_id
FROM conversation_history WHERE conversation_id = $1
"""
ROLE_NAMES = {"human": "user", "ai": "assistant"}
RowKey = tuple[str, str, str]


@pytest.fixture(scope="module", autouse=True)
def count_inputs() -> Iterator[None]:
    """Record how many inputs were tried, by outcome."""
    TRIED.clear()
    yield
    total = sum(TRIED.values())
    REPORT.write_bytes(orjson.dumps({"inputs_tried": total, "by_outcome": dict(TRIED)}))
    print(f"\nadversarial inputs tried: {total} {dict(TRIED)} -> {REPORT}")


# --- inputs and the oracle -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Input:
    """A value written under a checkpoint key; `doc` is set when the oracle knows it is good."""

    key: str
    raw: bytes
    doc: dict[str, Any] | None = None
    written_at: int = 0


def key_for(segment: str, written_at: int) -> str:
    return P.key(f"{segment}-{uuid.uuid4().hex[:8]}", written_at)


def _as_utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.utcoffset() is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _stored(content: object) -> tuple[str, dict[str, Any]]:
    """What the archive must hold for a message's content: the text and its encoding."""
    if not isinstance(content, str):
        return orjson.dumps(content).decode(), {"content_type": "json"}
    if "\x00" in content:
        return base64.b64encode(content.encode()).decode(), {"content_encoding": "base64"}
    return content, {}


def _expected_message(message: dict[str, Any], key_time: datetime) -> dict[str, Any]:
    content, encoding = _stored(message["content"])
    stamp = message.get("timestamp")
    metadata = dict(message.get("metadata") or {}) | encoding
    if stamp is None:
        metadata["timestamp_source"] = "checkpoint"
    return {
        "message_role": ROLE_NAMES.get(message["role"], message["role"]),
        "message_content": content,
        "timestamp": key_time if stamp is None else _as_utc(stamp),
        "metadata": numbers_exact(metadata),
    }


def _summary(doc: dict[str, Any], key_time: datetime) -> tuple[str, dict[str, Any]] | None:
    text = doc.get("conversation_summary")
    if not text:
        return None
    content, encoding = _stored(text)
    identity = "summary:" + hashlib.sha256(text.encode()).hexdigest()[:32]
    metadata = {"summary": True, "timestamp_source": "checkpoint"} | encoding
    row = {"message_role": "system", "message_content": content, "timestamp": key_time}
    return identity, row | {"metadata": numbers_exact(metadata)}


def oracle(doc: dict[str, Any], key_time: datetime) -> tuple[dict[str, Any], list[Any]]:
    """Rows a good document must produce: by identity (explicit ids, summary) and, for
    messages without an id, as a multiset."""
    by_id: dict[str, Any] = {}
    anonymous: list[Any] = []
    for message in doc["messages"]:
        row = _expected_message(message, key_time)
        ident = message.get("id")
        if ident is None or ident == "":
            anonymous.append(row)
        else:
            by_id[f"id:{ident}"] = row
    summary = _summary(doc, key_time)
    if summary is not None:
        by_id[summary[0]] = summary[1]
    return by_id, anonymous


def numbers_exact(value: object) -> Any:
    """A JSON value with its numbers as Decimals: jsonb keeps a number's decimal value, not
    whether it was written as a float (6.2e16 comes back as 62000000000000000)."""
    return json.loads(orjson.dumps(value), parse_float=Decimal, parse_int=Decimal)


def _comparable(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "message_role": row["message_role"],
        "message_content": row["message_content"],
        "timestamp": row["timestamp"],
        "metadata": json.loads(row["metadata"], parse_float=Decimal, parse_int=Decimal),
    }


def _sort_key(row: dict[str, Any]) -> bytes:
    return orjson.dumps(row, default=str, option=orjson.OPT_SORT_KEYS)


async def check_good(db: asyncpg.Connection, inp: Input) -> None:
    assert inp.doc is not None
    key_time = datetime.fromtimestamp(inp.written_at, UTC)
    by_id, anonymous = oracle(inp.doc, key_time)
    rows = await db.fetch(ROW_SQL, inp.doc["conversation_id"])
    keys = [r["message_key"] for r in rows]
    assert len(keys) == len(set(keys)), "duplicate rows"
    assert len(rows) == len(by_id) + len(anonymous), "rows missing or extra"
    tenant = inp.doc.get("tenant_id") or "default"
    for r in rows:
        assert r["tenant_id"] == tenant
        assert r["customer_id"] == _id_text(inp.doc.get("customer_id"))
        assert r["user_id"] == _id_text(inp.doc.get("user_id"))
    named = {
        r["message_key"]: _comparable(r) for r in rows if not r["message_key"].startswith("h:")
    }
    assert named == by_id
    hashed = sorted(
        (_comparable(r) for r in rows if r["message_key"].startswith("h:")), key=_sort_key
    )
    assert hashed == sorted(anonymous, key=_sort_key)


def _id_text(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


async def check_reference(db: asyncpg.Connection, inp: Input, decoded: model.Checkpoint) -> None:
    """A hostile input that decodes: every decoded message is in the archive, once, intact."""
    for message in decoded.messages:
        rows = await db.fetch(
            "SELECT message_role, message_content, timestamp, metadata FROM conversation_history"
            " WHERE tenant_id = $1 AND conversation_id = $2 AND message_key = $3",
            decoded.tenant_id, decoded.conversation_id, message.key,
        )  # fmt: skip
        assert len(rows) == 1, f"{len(rows)} rows for one message of {inp.key!r}"
        row = rows[0]
        assert (row["message_role"], row["message_content"]) == (message.role, message.content)
        assert row["timestamp"] == message.timestamp
        stored = json.loads(row["metadata"], parse_float=Decimal, parse_int=Decimal)
        assert stored == numbers_exact(message.metadata)


def reference(inp: Input, options: codecs.CodecOptions) -> model.Checkpoint | None:
    """consumer/codecs.py on the input, as the consumer is configured; None if it refuses."""
    info = P.layout.parse(inp.key)
    assert info is not None
    try:
        return codecs.decode(
            inp.key, inp.raw, key_conversation_id=keys.for_storage(info.conversation_id),
            key_time=info.written_at, options=options,
        )  # fmt: skip
    except DecodeError:
        return None


async def outcome_of(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection, inp: Input
) -> str:
    """Check one input after its batch; returns 'archived' or 'dead_lettered'."""
    layout = parts.archiver.redis.layout
    left = await redis.exists(inp.key, layout.shadow(inp.key), layout.claim(inp.key))
    assert left == 0, f"{inp.key!r} (or its shadow/claim) still in Redis"
    assert await redis.zscore(layout.deadlines, inp.key) is None
    stored_key = keys.for_storage(inp.key)
    letters = await db.fetch(
        "SELECT raw FROM archive_dead_letters WHERE source_key = $1", stored_key
    )
    if letters:
        assert [bytes(r["raw"]) for r in letters] == [inp.raw], "dead letter lacks the raw bytes"
        assert inp.doc is None, f"a good checkpoint was dead-lettered: {inp.key!r}"
        assert reference(inp, parts.archiver.codec) is None, "decodable, yet dead-lettered"
        return "dead_lettered"
    if inp.doc is not None:
        await check_good(db, inp)
    else:
        decoded = reference(inp, parts.archiver.codec)
        assert decoded is not None, "neither archived nor dead-lettered"
        await check_reference(db, inp, decoded)
    return "archived"


async def reset(redis: aioredis.Redis, db: asyncpg.Connection) -> None:
    await redis.flushall()
    await db.execute("TRUNCATE conversation_history, conversations, archive_dead_letters")


async def archive_batch(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection, batch: Sequence[Input]
) -> Counter[str]:
    """Write every input, archive them in one batch, check each; outcomes by kind."""
    for inp in batch:
        await P.write(redis, inp.key, inp.raw)
    outcome = await parts.archiver.archive([i.key for i in batch], NOW_DUE)
    assert outcome.errors == 0 and outcome.held == 0, outcome
    assert outcome.archived + outcome.dead_letters == len(batch), outcome
    found: Counter[str] = Counter()
    for inp in batch:
        found[await outcome_of(parts, redis, db, inp)] += 1
    TRIED.update(found)
    return found


# --- strategies ----------------------------------------------------------------------------------

ANY_CHAR = st.characters(blacklist_categories=["Cs"])
NO_NUL = st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00")
KEY_CHAR = st.sampled_from(":{} é漢\t-_.|*?[]\\\"'") | NO_NUL
RESERVED = {"timestamp_source", "content_type", "content_encoding", "summary"}

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(ANY_CHAR, max_size=20)
)
json_values = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(ANY_CHAR, max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
clean_leaf = json_leaf.filter(lambda v: not (isinstance(v, str) and "\x00" in v))
clean_values = st.recursive(
    clean_leaf,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(NO_NUL, max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
metadata = st.dictionaries(
    st.text(NO_NUL, max_size=10).filter(lambda k: k not in RESERVED), clean_values, max_size=4
)
ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12, minutes=-30))]
)


@st.composite
def timestamps(draw: st.DrawFn) -> str | None:
    """None, or an ISO 8601 time within the archive's years (naive, or with an offset)."""
    kind = draw(st.sampled_from(["none", "aware", "naive", "z"]))
    if kind == "none":
        return None
    moment = draw(st.datetimes(datetime(1971, 1, 1), datetime(2198, 12, 31)))
    if kind == "naive":
        return moment.isoformat()
    aware = moment.replace(tzinfo=UTC).astimezone(draw(ZONES))
    text = aware.isoformat()
    return text.replace("+00:00", "Z") if kind == "z" else text


@st.composite
def messages(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(0, 6))
    ids = draw(
        st.lists(
            st.text(NO_NUL, min_size=1, max_size=12) | st.integers(0, 10**12),
            min_size=count, max_size=count, unique_by=str,
        )
    )  # fmt: skip
    found = []
    for ident in ids:
        message: dict[str, Any] = {
            "role": draw(st.sampled_from(["user", "assistant", "system", "tool", "human", "ai"])),
            "content": draw(st.text(ANY_CHAR, max_size=60) | st.lists(json_values, max_size=3)),
        }
        if (stamp := draw(timestamps())) is not None:
            message["timestamp"] = stamp
        if draw(st.booleans()):
            message["metadata"] = draw(metadata)
        if draw(st.integers(0, 3)):
            message["id"] = ident
        found.append(message)
    return found


def _optional_id() -> st.SearchStrategy[str | int | None]:
    return st.none() | st.text(NO_NUL, max_size=12) | st.integers(-(2**63), 2**63 - 1)


@st.composite
def good_inputs(draw: st.DrawFn) -> Input:
    written_at = int(time.time()) - draw(st.integers(0, 10**6))
    doc: dict[str, Any] = {
        "conversation_id": f"conv-{uuid.uuid4().hex}",
        "customer_id": draw(_optional_id()),
        "user_id": draw(_optional_id()),
        "messages": draw(messages()),
    }
    if draw(st.booleans()):
        doc["tenant_id"] = draw(st.text(NO_NUL, min_size=1, max_size=12))
    if draw(st.booleans()):
        doc["conversation_summary"] = draw(st.text(ANY_CHAR, max_size=40))
    if draw(st.booleans()):
        doc["unknown_field"] = draw(json_values)
    key = key_for(draw(st.text(KEY_CHAR, min_size=1, max_size=16)), written_at)
    return Input(key, orjson.dumps(doc), doc, written_at)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A good document with one field replaced, removed or mistyped."""
    doc = dict(draw(good_inputs()).doc or {})
    target: dict[str, Any] = doc
    if doc["messages"] and draw(st.booleans()):
        target = doc["messages"][draw(st.integers(0, len(doc["messages"]) - 1))]
    field = draw(st.sampled_from(sorted(target) or ["messages"]))
    if draw(st.booleans()):
        target.pop(field, None)
    else:
        target[field] = draw(json_values)
    return orjson.dumps(doc)


@st.composite
def hostile_inputs(draw: st.DrawFn) -> Input:
    raw = draw(
        st.binary(max_size=200)
        | json_values.map(orjson.dumps)
        | mutated()
        | st.sampled_from(CORPUS_BYTES)
    )
    written_at = int(time.time()) - 60
    return Input(key_for(draw(st.text(KEY_CHAR, min_size=1, max_size=16)), written_at), raw)


CORPUS_BYTES = [
    b"", b"null", b"[]", b'"text"', b"{", b'{"messages": [', b"\x80", b"\x80\x04\x95",
    b'{"messages": null}', b'{"messages": {"0": {}}}', b'{"messages": [1, "two", null]}',
]  # fmt: skip


# --- the property ------------------------------------------------------------------------------


@HYPOTHESIS
@given(batch=st.lists(good_inputs() | hostile_inputs(), min_size=1, max_size=4))
async def test_any_batch_ends_archived_losslessly_or_dead_lettered(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection, batch: list[Input]
) -> None:
    await reset(redis, db)
    await archive_batch(parts, redis, db, batch)


@HYPOTHESIS
@given(good=good_inputs())
async def test_good_checkpoints_are_archived_exactly(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection, good: Input
) -> None:
    await reset(redis, db)
    found = await archive_batch(parts, redis, db, [good])
    assert found == {"archived": 1}


# --- the corpus --------------------------------------------------------------------------------


def doc_bytes(conversation: str, messages_: list[dict[str, Any]], **fields: Any) -> bytes:
    return orjson.dumps({"conversation_id": conversation, "messages": messages_, **fields})


def message(content: object = "hi", **fields: Any) -> dict[str, Any]:
    return {"role": "user", "content": content, "timestamp": "2026-11-21T10:00:00Z", **fields}


def good(segment: str = "good", **fields: Any) -> Input:
    written_at = int(time.time()) - 60
    doc = {
        "conversation_id": f"conv-{uuid.uuid4().hex}",
        "messages": [message("hello", id="a"), message("world", id="b", role="assistant")],
        **fields,
    }
    return Input(key_for(segment, written_at), orjson.dumps(doc), doc, written_at)


def hostile(raw: bytes, segment: str = "hostile") -> Input:
    return Input(key_for(segment, int(time.time()) - 60), raw)


def nested(depth: int) -> bytes:
    return (
        b'{"messages": [{"role": "user", "content": "x", "metadata": {"a": '
        + b"[" * depth
        + b"]" * depth
        + b"}}]}"
    )


HOSTILE = {
    "invalid_json": b'{"messages": [{"role": "user", "content": "unterminated',
    "empty": b"",
    "json_null": b"null",
    "json_list": b'[{"role": "user", "content": "x"}]',
    "messages_not_list": b'{"messages": {"role": "user"}}',
    "message_not_object": b'{"messages": ["hi"]}',
    "missing_messages": b'{"conversation_id": "c"}',
    "missing_content": doc_bytes("c", [{"role": "user"}]),
    "missing_role": doc_bytes("c", [{"content": "x"}]),
    "role_wrong_type": doc_bytes("c", [message(role=7)]),
    "role_unknown": doc_bytes("c", [message(role="wizard")]),
    "conversation_id_int": doc_bytes("c", [message()], conversation_id=5),
    "tenant_empty": doc_bytes("c", [message()], tenant_id=""),
    "tenant_list": doc_bytes("c", [message()], tenant_id=[]),
    "customer_bool": doc_bytes("c", [message()], customer_id=True),
    "user_object": doc_bytes("c", [message()], user_id={}),
    "repeated_ids": doc_bytes("c", [message(id="x"), message("y", id="x")]),
    "timestamp_year_1900": doc_bytes("c", [message(timestamp="1900-01-01T00:00:00Z")]),
    "timestamp_year_9999": doc_bytes("c", [message(timestamp="9999-12-31T23:59:59-12:00")]),
    "timestamp_year_1": doc_bytes("c", [message(timestamp="0001-01-01T00:00:00+14:00")]),
    "timestamp_not_a_date": doc_bytes("c", [message(timestamp="yesterday")]),
    "timestamp_month_13": doc_bytes("c", [message(timestamp="2026-13-01T00:00:00Z")]),
    "timestamp_number": doc_bytes("c", [message(timestamp=1_700_000_000)]),
    "metadata_list": doc_bytes("c", [message(metadata=[1])]),
    "metadata_nul": doc_bytes("c", [message(metadata={"k": "a\x00b"})]),
    "metadata_key_nul": doc_bytes("c", [message(metadata={"a\x00": 1})]),
    "summary_number": doc_bytes("c", [message()], conversation_summary=3),
    "nested_300": nested(300),
    "nested_100000": nested(100_000),
    "invalid_utf8": b'{"messages": [{"role": "user", "content": "caf\xe9"}]}',
    "lone_surrogate": b'{"messages": [{"role": "user", "content": "\\ud800"}]}',
    "nan": b'{"messages": [{"role": "user", "content": "x", "metadata": {"n": NaN}}]}',
    "pickle_refused": pickle.dumps({"messages": []}),
}


async def test_hostile_corpus_mixed_with_good_checkpoints(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    goods = [good("before"), good("between"), good("after")]
    bad = [hostile(raw, name) for name, raw in HOSTILE.items()]
    batch = [goods[0], *bad[: len(bad) // 2], goods[1], *bad[len(bad) // 2 :], goods[2]]
    found = await archive_batch(parts, redis, db, batch)
    assert found == {"archived": 3, "dead_lettered": len(HOSTILE)}


ODD_SEGMENTS = [
    "a:b:c",
    "{tenant}:conv",
    "}{",
    "with space",
    "café-漢字-😀",
    "tab\there",
    "new\nline",
    "*?[x]",
]


async def test_odd_keys_are_archived(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    batch = [good(segment) for segment in ODD_SEGMENTS]
    batch.append(hostile(b"not json", "{odd} bad: key é"))
    found = await archive_batch(parts, redis, db, batch)
    assert found == {"archived": len(ODD_SEGMENTS), "dead_lettered": 1}


async def test_content_edge_cases_are_stored_losslessly(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    contents: list[object] = [
        "nul\x00inside", "\x00", "controls \x01\x07\x08\x0b\x0c\x1b\x7f\u0085\u2028\u2029",
        "\ufeffbom", "emoji 👩‍👩‍👧 combining e\u0301", "", " ", "x" * 100_000,
        [{"type": "text", "text": "a\x00b"}], {"deep": [[[[["x"]]]]]},
    ]  # fmt: skip
    messages_ = [message(c, id=f"m{i}") for i, c in enumerate(contents)]
    doc = {
        "conversation_id": f"conv-{uuid.uuid4().hex}",
        "messages": messages_,
        "conversation_summary": "s\x00",
    }
    written_at = int(time.time()) - 60
    inp = Input(key_for("edge", written_at), orjson.dumps(doc), doc, written_at)
    assert await archive_batch(parts, redis, db, [inp]) == {"archived": 1}


async def test_naive_timestamps_take_the_configured_zone(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    inp = good("naive", messages=[message(timestamp="2026-03-29T01:30:00", id="n")])
    assert await archive_batch(parts, redis, db, [inp]) == {"archived": 1}


async def test_huge_message_list_is_archived_whole(
    make_settings: MakeSettings, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    messages_ = [message(f"m{i}", id=i) for i in range(100_000)]
    doc = {"conversation_id": f"conv-{uuid.uuid4().hex}", "messages": messages_}
    written_at = int(time.time()) - 60
    inp = Input(key_for("huge-list", written_at), orjson.dumps(doc), doc, written_at)
    # The default 30 s command timeout, not the suite's 3 s: 100,000 rows on a busy machine.
    async with service.connected(make_settings(db_timeout="30s")) as parts:
        found = await archive_batch(parts, redis, db, [inp, good("beside-huge")])
    assert found == {"archived": 2}


async def test_fifty_megabyte_payload_is_archived_and_an_oversized_one_dead_lettered(
    make_settings: MakeSettings, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    big = "€" * (50 * 1024 * 1024 // 3)  # 50 MB of UTF-8
    doc = {"conversation_id": f"conv-{uuid.uuid4().hex}", "messages": [message(big, id="big")]}
    written_at = int(time.time()) - 60
    fifty = Input(key_for("fifty-mb", written_at), orjson.dumps(doc), doc, written_at)
    assert len(fifty.raw) > 50 * 1024 * 1024
    async with service.connected(make_settings(db_timeout="60s")) as parts:
        assert await archive_batch(parts, redis, db, [fifty, good("beside-big")]) == {"archived": 2}
    over = hostile(orjson.dumps({"messages": [message("y" * 2048)]}), "over-limit")
    async with service.connected(make_settings(max_payload=1024)) as parts:
        found = await archive_batch(parts, redis, db, [over, good("beside-over")])
    assert found == {"archived": 1, "dead_lettered": 1}


async def test_a_message_whose_timestamp_changes_between_checkpoints_is_archived_once(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    conversation = f"conv-{uuid.uuid4().hex}"
    stamps = [None, "2026-11-21T10:00:00.123456Z", "2026-11-21T10:00:00.123Z", None]
    for i, stamp in enumerate(stamps):
        fields = {} if stamp is None else {"timestamp": stamp}
        item = {"id": "same", "role": "user", "content": "hello", **fields}
        raw = orjson.dumps({"conversation_id": conversation, "messages": [item]})
        key = P.key(conversation, int(time.time()) - 100 + i)
        await P.write(redis, key, raw)
        await parts.archiver.archive([key], NOW_DUE)
    TRIED["archived"] += len(stamps)
    rows = await db.fetchval(
        "SELECT count(*) FROM conversation_history WHERE conversation_id = $1", conversation
    )
    assert rows == 1


# --- pickles crafted to run code ---------------------------------------------------------------


class _Reduce:
    """Pickles as `func(*args)`: what an attacker's payload calls on load."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


def evil_pickles(marker: Path) -> dict[str, bytes]:
    touch = f"open({str(marker)!r}, 'w').write('pwned')"
    shell = f"touch {marker}"
    found: dict[str, bytes] = {}
    for protocol in (0, 2, 5):
        found[f"os_system_p{protocol}"] = pickle.dumps(_Reduce(os.system, shell), protocol)
        found[f"eval_p{protocol}"] = pickle.dumps(_Reduce(builtins.eval, touch), protocol)
    found["exec"] = pickle.dumps(_Reduce(builtins.exec, touch))
    found["subprocess"] = pickle.dumps(_Reduce(subprocess.call, ["touch", str(marker)]))
    found["in_a_checkpoint"] = pickle.dumps({"messages": [_Reduce(os.system, shell)]})
    found["hand_made_global"] = b"cposix\nsystem\n(V" + shell.encode() + b"\ntR."
    found["inst_opcode"] = b"(V" + shell.encode() + b"\nios\nsystem\n."
    found["getattr_chain"] = b"cbuiltins\ngetattr\n(cbuiltins\nobject\nVexec\ntR."
    found["codecs_encode_abuse"] = (
        b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R."
    )
    return found


@pytest.fixture
async def pickle_parts(make_settings: MakeSettings) -> AsyncIterator[service.Parts]:
    async with service.connected(make_settings(allow_pickle=True)) as connected:
        yield connected


@pytest.mark.parametrize("allow_pickle", [False, True])
async def test_pickles_crafted_to_run_code_never_run(
    allow_pickle: bool,
    parts: service.Parts,
    pickle_parts: service.Parts,
    redis: aioredis.Redis,
    db: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    marker = tmp_path / "pwned"
    evil = [hostile(raw, f"pickle-{name}") for name, raw in evil_pickles(marker).items()]
    benign = pickle.dumps(
        {"conversation_id": f"conv-{uuid.uuid4().hex}",
         "messages": [{"role": "user", "content": "pickled", "timestamp": datetime(2026, 1, 2, tzinfo=UTC)}]}
    )  # fmt: skip
    batch = [good("before-pickles"), *evil, hostile(benign, "benign-pickle"), good("after-pickles")]
    archiver = pickle_parts if allow_pickle else parts
    found = await archive_batch(archiver, redis, db, batch)
    assert not marker.exists(), "a pickle payload ran code"
    benign_archived = 1 if allow_pickle else 0
    assert found == {
        "archived": 2 + benign_archived,
        "dead_lettered": len(evil) + 1 - benign_archived,
    }


# --- known bugs: each test states the promise and fails until consumer/ is fixed ----------------


async def test_a_key_with_nul_does_not_block_its_batch(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    poisoned = Input(key_for("nul\x00key", int(time.time()) - 60), orjson.dumps({"messages": []}))
    batch = [good("before-nul"), poisoned, good("after-nul")]
    found = await archive_batch(parts, redis, db, batch)  # the key is stored backslash-escaped
    assert found["archived"] + found["dead_lettered"] == 3


async def test_a_key_that_is_not_utf8_is_archived_or_dead_lettered(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    key = b"langgraph:checkpoint:caf\xe9:" + str(int(time.time()) - 20).encode()
    await redis.set(key, orjson.dumps({"messages": [message("bytes key")]}), px=5_000)
    await parts.sweeper.sweep()
    TRIED["not_utf8_key"] += 1
    letters = await db.fetchval("SELECT count(*) FROM archive_dead_letters")
    rows = await db.fetchval("SELECT count(*) FROM conversation_history")
    assert (rows, letters) in ((1, 0), (0, 1)), "neither archived nor dead-lettered"
    assert await redis.exists(key) == 0


async def test_big_integers_are_never_silently_rounded(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    raw = (
        b'{"conversation_id": "big-int", "messages": [{"id": "n", "role": "user", "content": "x",'
        b' "timestamp": "2026-11-21T10:00:00Z", "metadata": {"n": 123456789012345678901234567890}}]}'
    )
    found = await archive_batch(parts, redis, db, [hostile(raw, "big-int")])
    assert found == {"dead_lettered": 1}  # with its raw bytes (checked by archive_batch)
    assert await db.fetchval("SELECT count(*) FROM conversation_history") == 0


async def test_metadata_keys_named_like_the_archivers_markers_survive(
    parts: service.Parts, redis: aioredis.Redis, db: asyncpg.Connection
) -> None:
    mine = {"content_type": "markdown", "timestamp_source": "agent clock"}
    item = {"id": "m", "role": "user", "content": [{"type": "text"}], "metadata": mine}
    inp = hostile(orjson.dumps({"messages": [item]}), "markers")
    found = await archive_batch(parts, redis, db, [inp])
    if found == {"archived": 1}:
        stored = orjson.loads(await db.fetchval("SELECT metadata FROM conversation_history"))
        assert {k: stored.get(k) for k in mine} == mine
    else:  # refused rather than overwritten: kept whole, raw bytes checked by archive_batch
        assert found == {"dead_lettered": 1}

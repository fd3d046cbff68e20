from __future__ import annotations

import base64
import hashlib
import os
import pickle
import pickletools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer import codecs, model
from consumer.codecs import PICKLE_REFUSED, CodecOptions, decode
from consumer.exceptions import DecodeError

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"
KEY_PREFIX = "langgraph:checkpoint:"
KEY_TIME = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
SECRET = "s3cr3t-payload-text"
MADRID = ZoneInfo("Europe/Madrid")


# --- helpers -------------------------------------------------------------------------------------


def sample_keys() -> dict[str, str]:
    keys: dict[str, str] = {}
    for line in (SAMPLES / "keys.txt").read_text().splitlines():
        if line.strip():
            name, key = line.split()
            keys[name] = key
    return keys


def decode_sample(name: str, options: CodecOptions | None = None) -> model.Checkpoint:
    key = sample_keys()[name]
    conversation_id, _, epoch = key.removeprefix(KEY_PREFIX).rpartition(":")
    return decode(
        key,
        (SAMPLES / name).read_bytes(),
        key_conversation_id=conversation_id,
        key_time=datetime.fromtimestamp(int(epoch), UTC),
        options=options or CodecOptions(),
    )


def decode_raw(
    raw: bytes, options: CodecOptions | None = None, key_time: datetime = KEY_TIME
) -> model.Checkpoint:
    return decode(
        "langgraph:checkpoint:conv-from-key:1",
        raw,
        key_conversation_id="conv-from-key",
        key_time=key_time,
        options=options or CodecOptions(),
    )


def decode_doc(doc: object, options: CodecOptions | None = None) -> model.Checkpoint:
    return decode_raw(orjson.dumps(doc), options)


def with_messages(*messages: object, **fields: object) -> dict[str, object]:
    return {"conversation_id": "c-1", "messages": list(messages), **fields}


def seed(content: object = "hello", **fields: object) -> dict[str, object]:
    return {"role": "user", "content": content, "timestamp": "2026-11-21T10:00:00Z", **fields}


def decode_error(doc: object, options: CodecOptions | None = None) -> str:
    with pytest.raises(DecodeError) as caught:
        decode_doc(doc, options)
    return str(caught.value)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, *rest: int) -> datetime:
    second, micro = (*rest, 0, 0)[:2]
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


def summary_key(summary: str) -> str:
    return "summary:" + hashlib.sha256(summary.encode()).hexdigest()[:32]


# --- samples -------------------------------------------------------------------------------------


def test_basic_sample() -> None:
    checkpoint = decode_sample("basic.json")

    assert checkpoint.source_key == "langgraph:checkpoint:wa-msg-abc123:1763719200"
    assert checkpoint.conversation_id == "wa-msg-abc123"
    assert checkpoint.customer_id == "6f1c2b1e-8a4d-4f5e-9c1a-2b3c4d5e6f70"
    assert checkpoint.tenant_id == "salon-madrid"
    assert checkpoint.user_id is None
    assert [m.role for m in checkpoint.messages] == ["user", "assistant", "user", "assistant"]
    assert checkpoint.messages[0].content == "Hola, quiero reservar un corte para el viernes"
    assert checkpoint.messages[0].timestamp == utc(2026, 11, 21, 9, 0, 0)
    assert checkpoint.messages[3].timestamp == utc(2026, 11, 21, 9, 1, 15)
    assert checkpoint.messages[0].metadata == {}
    assert checkpoint.messages[2].metadata == {"channel": "whatsapp"}
    assert checkpoint.messages[3].metadata == {"tool": "calendar.search"}
    assert all(m.key.startswith("h:") and len(m.key) == 34 for m in checkpoint.messages)
    assert len({m.key for m in checkpoint.messages}) == 4


def test_unidentified_sample_has_no_customer_and_default_tenant() -> None:
    checkpoint = decode_sample("unidentified.json")

    assert checkpoint.conversation_id == "wa:msg:early-77"
    assert checkpoint.customer_id is None
    assert checkpoint.tenant_id == "default"
    assert [m.role for m in checkpoint.messages] == ["user", "assistant"]
    assert checkpoint.messages[0].timestamp == utc(2026, 11, 21, 10, 1, 0)


def test_summarized_sample_puts_the_summary_first() -> None:
    checkpoint = decode_sample("summarized.json")
    summary = "Customer wants a haircut on Friday afternoon after 17h; offered 17:30 with Marta."

    first = checkpoint.messages[0]
    assert len(checkpoint.messages) == 4
    assert first.key == summary_key(summary)
    assert first.role == "system"
    assert first.content == summary
    assert first.timestamp == datetime.fromtimestamp(1763722800, UTC)
    assert first.metadata == {"summary": True, "timestamp_source": "checkpoint"}
    assert [m.role for m in checkpoint.messages[1:]] == ["assistant", "user", "assistant"]


def test_basic_and_summarized_share_the_overlapping_message_key() -> None:
    basic = decode_sample("basic.json")
    summarized = decode_sample("summarized.json")

    assert basic.messages[3].content == summarized.messages[1].content
    assert basic.messages[3].key == summarized.messages[1].key
    assert {m.key for m in basic.messages} & {m.key for m in summarized.messages} == {
        basic.messages[3].key
    }


def test_langchain_constructor_sample() -> None:
    checkpoint = decode_sample("langchain_constructor.json")
    key_time = datetime.fromtimestamp(1763719300, UTC)

    assert checkpoint.user_id == "usr_1a2b3c4d"
    assert checkpoint.customer_id is None
    assert checkpoint.tenant_id == "shop-42"
    assert [m.role for m in checkpoint.messages] == ["user", "assistant", "tool", "assistant"]
    assert [m.key for m in checkpoint.messages] == [
        "id:run-1-human",
        "id:run-1-ai",
        "id:run-1-tool",
        "id:run-1-ai-2",
    ]
    assert all(m.timestamp == key_time for m in checkpoint.messages)
    call = {"name": "sales_report", "args": {"days": 7}, "id": "call_1", "type": "tool_call"}
    assert checkpoint.messages[1].content == ""
    assert checkpoint.messages[1].metadata == {
        "tool_calls": [call],
        "format": "langchain",
        "lc_id": ["langchain", "schema", "messages", "AIMessage"],
        "timestamp_source": "checkpoint",
    }
    assert checkpoint.messages[2].metadata["tool_call_id"] == "call_1"
    assert checkpoint.messages[2].content == '{"total": 18250.4, "orders": 311}'


def test_langchain_typed_sample() -> None:
    checkpoint = decode_sample("langchain_typed.json")

    assert checkpoint.tenant_id == "default"
    assert [m.role for m in checkpoint.messages] == ["system", "user", "assistant"]
    assert [m.key for m in checkpoint.messages] == ["id:sys-0", "id:h-1", "id:a-1"]
    assert checkpoint.messages[2].metadata == {
        "response_metadata": {"model_name": "gpt-4o-mini"},
        "format": "langchain",
        "timestamp_source": "checkpoint",
    }


@pytest.mark.parametrize("name", ["malformed_shape.txt", "malformed_truncated.txt"])
def test_malformed_samples_are_decode_errors(name: str) -> None:
    with pytest.raises(DecodeError):
        decode_sample(name)


# --- identity ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "basic.json",
        "unidentified.json",
        "summarized.json",
        "langchain_constructor.json",
        "langchain_typed.json",
    ],
)
def test_decoding_twice_gives_identical_checkpoints(name: str) -> None:
    assert decode_sample(name) == decode_sample(name)


def test_identical_messages_in_one_checkpoint_get_distinct_keys() -> None:
    doc = with_messages(seed("ok"), seed("ok"), seed("ok"))

    keys = [m.key for m in decode_doc(doc).messages]

    assert len(set(keys)) == 3
    assert keys == [m.key for m in decode_doc(doc).messages]


def test_messages_without_timestamp_keep_their_key_across_checkpoints() -> None:
    raw = orjson.dumps(with_messages({"role": "user", "content": "no time"}))

    early = decode_raw(raw, key_time=utc(2026, 1, 1))
    late = decode_raw(raw, key_time=utc(2026, 1, 2))

    assert early.messages[0].key == late.messages[0].key
    assert early.messages[0].timestamp == utc(2026, 1, 1)
    assert early.messages[0].metadata == {"timestamp_source": "checkpoint"}


def test_key_depends_on_role_timestamp_and_content() -> None:
    base = decode_doc(with_messages(seed("a"))).messages[0].key
    other_content = decode_doc(with_messages(seed("b"))).messages[0].key
    other_role = decode_doc(with_messages(seed("a", role="assistant"))).messages[0].key
    other_time = decode_doc(with_messages(seed("a", timestamp="2026-11-21T10:00:01Z")))

    assert len({base, other_content, other_role, other_time.messages[0].key}) == 4


def test_ids_become_keys_and_integers_are_accepted() -> None:
    checkpoint = decode_doc(with_messages(seed(id="m-1"), seed(id=7), seed(id="")))

    assert [m.key for m in checkpoint.messages][:2] == ["id:m-1", "id:7"]
    assert checkpoint.messages[2].key.startswith("h:")


def test_repeated_id_is_a_decode_error() -> None:
    message = decode_error(with_messages(seed(id="m-1"), seed("other", id="m-1")))

    assert message == "messages[1].id: repeats the id of messages[0]"


def test_summary_key_depends_only_on_the_summary() -> None:
    doc = with_messages(seed(), conversation_summary="short summary")

    first = decode_raw(orjson.dumps(doc), key_time=utc(2026, 1, 1))
    second = decode_raw(orjson.dumps(doc), key_time=utc(2026, 2, 1))

    assert first.messages[0].key == second.messages[0].key == summary_key("short summary")


@pytest.mark.parametrize("summary", [None, ""])
def test_absent_or_empty_summary_adds_no_message(summary: str | None) -> None:
    checkpoint = decode_doc(with_messages(seed(), conversation_summary=summary))

    assert len(checkpoint.messages) == 1


# --- top-level fields ----------------------------------------------------------------------------


@pytest.mark.parametrize("conversation_id", [None, "absent"])
def test_conversation_id_falls_back_to_the_key(conversation_id: str | None) -> None:
    doc: dict[str, object] = {"messages": []}
    if conversation_id is None:
        doc["conversation_id"] = None

    checkpoint = decode_doc(doc)

    assert checkpoint.conversation_id == "conv-from-key"
    assert checkpoint.messages == ()


def test_integer_customer_and_user_ids_become_strings() -> None:
    checkpoint = decode_doc(with_messages(customer_id=42, user_id="u-1", tenant_id="t"))

    assert (checkpoint.customer_id, checkpoint.user_id, checkpoint.tenant_id) == ("42", "u-1", "t")


def test_default_tenant_comes_from_options() -> None:
    checkpoint = decode_doc(with_messages(), CodecOptions(default_tenant="acme"))

    assert checkpoint.tenant_id == "acme"


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ([], "payload: not a JSON object"),
        ("text", "payload: not a JSON object"),
        (None, "payload: not a JSON object"),
        ({"conversation_id": "c"}, "messages: missing"),
        ({"conversation_id": "c", "messages": {}}, "messages: not a list"),
        ({"conversation_id": 5, "messages": []}, "conversation_id: not a string"),
        ({"conversation_id": "", "messages": []}, "conversation_id: empty"),
        (with_messages(tenant_id=""), "tenant_id: empty"),
        (with_messages(tenant_id=3), "tenant_id: not a string"),
        (with_messages(customer_id=True), "customer_id: not a string or integer"),
        (with_messages(customer_id=1.5), "customer_id: not a string or integer"),
        (with_messages(user_id=["u"]), "user_id: not a string or integer"),
        (with_messages(conversation_summary=3), "conversation_summary: not a string"),
        (with_messages("hello"), "messages[0]: not an object"),
        (with_messages(seed(role="robot")), "messages[0].role: not one of"),
        (with_messages(seed(role=None)), "messages[0].role: not a string"),
        (with_messages({"content": "x"}), "messages[0].role: not a string"),
        (with_messages(seed(content=12)), "messages[0].content: not a string, list or object"),
        (with_messages(seed(content=None)), "messages[0].content: not a string, list or object"),
        (with_messages(seed(metadata=[1])), "messages[0].metadata: not an object"),
        (with_messages(seed(id=1.5)), "messages[0].id: not a string or integer"),
        (with_messages(seed(id=False)), "messages[0].id: not a string or integer"),
    ],
)
def test_wrong_typed_fields_are_decode_errors(doc: object, expected: str) -> None:
    assert decode_error(doc).startswith(expected)


# --- timestamps ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2026-11-21T10:00:00Z", utc(2026, 11, 21, 10)),
        ("2026-11-21T10:00:00+01:00", utc(2026, 11, 21, 9)),
        ("2026-11-21T10:00:00.250-05:00", utc(2026, 11, 21, 15, 0, 0, 250000)),
        ("2026-11-21", utc(2026, 11, 21)),
    ],
)
def test_iso_timestamps_are_normalised_to_utc(stamp: str, expected: datetime) -> None:
    timestamp = decode_doc(with_messages(seed(timestamp=stamp))).messages[0].timestamp

    assert timestamp == expected
    assert timestamp.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("zone", "stamp", "expected"),
    [
        (MADRID, "2026-07-01T12:00:00", utc(2026, 7, 1, 10)),
        (MADRID, "2026-12-01T12:00:00", utc(2026, 12, 1, 11)),
        (timezone(timedelta(hours=-3)), "2026-12-01T12:00:00", utc(2026, 12, 1, 15)),
        (MADRID, "2026-12-01T12:00:00Z", utc(2026, 12, 1, 12)),
    ],
)
def test_naive_timestamps_take_the_configured_timezone(
    zone: timezone | ZoneInfo, stamp: str, expected: datetime
) -> None:
    checkpoint = decode_doc(with_messages(seed(timestamp=stamp)), CodecOptions(timezone=zone))

    assert checkpoint.messages[0].timestamp == expected


def test_timestamp_in_the_configured_zone_still_checks_the_utc_year() -> None:
    doc = with_messages(seed(timestamp="1970-01-01T00:30:00"))

    assert "year out of range" in decode_error(doc, CodecOptions(timezone=MADRID))


@pytest.mark.parametrize(
    "stamp",
    [
        "1969-12-31T23:59:59Z",
        "2200-01-01T00:00:00Z",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "1000-06-01T00:00:00",
    ],
)
def test_out_of_range_timestamps_are_decode_errors(stamp: str) -> None:
    message = decode_error(with_messages(seed(timestamp=stamp)))

    assert message == "messages[0].timestamp: year out of range 1970..2199"


@pytest.mark.parametrize(
    "stamp", [SECRET, "", "2026-13-01T00:00:00", "21/11/2026", 1763719200, ["2026-11-21"], True]
)
def test_non_date_timestamps_are_decode_errors(stamp: object) -> None:
    message = decode_error(with_messages(seed(timestamp=stamp)))

    assert message == "messages[0].timestamp: not an ISO 8601 string"


# --- content and metadata ------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["human", "ai"])
def test_langchain_role_names_are_accepted_in_seed_messages(role: str) -> None:
    message = decode_doc(with_messages(seed(role=role))).messages[0]

    assert message.role == {"human": "user", "ai": "assistant"}[role]


def test_multimodal_content_is_stored_as_json() -> None:
    blocks = [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "u"}}]

    message = decode_doc(with_messages(seed(blocks, metadata={"a": 1}))).messages[0]

    assert orjson.loads(message.content) == blocks
    assert message.metadata == {"a": 1, "content_type": "json"}


def test_unknown_message_fields_are_ignored() -> None:
    message = decode_doc(with_messages(seed(extra="ignored"))).messages[0]

    assert message.metadata == {}


def test_nul_in_content_is_stored_as_base64() -> None:
    text = "before\x00after ñ"

    message = decode_doc(with_messages(seed(text))).messages[0]

    assert "\x00" not in message.content
    assert base64.b64decode(message.content).decode() == text
    assert message.metadata == {"content_encoding": "base64"}


def test_nul_in_summary_is_stored_as_base64() -> None:
    message = decode_doc(with_messages(conversation_summary="a\x00b")).messages[0]

    assert base64.b64decode(message.content) == b"a\x00b"
    assert message.metadata["content_encoding"] == "base64"


def test_nul_escape_in_raw_json_content_is_stored_as_base64() -> None:
    raw = b'{"conversation_id": "c", "messages": [{"role": "user", "content": "x\\u0000y"}]}'

    message = decode_raw(raw).messages[0]

    assert base64.b64decode(message.content) == b"x\x00y"


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (with_messages(seed(metadata={"k": "v\x00"})), "messages[0].metadata: contains NUL"),
        (with_messages(seed(metadata={"k\x00": 1})), "messages[0].metadata: contains NUL"),
        (
            with_messages(seed(metadata={"a": [{"b": "\x00"}]})),
            "messages[0].metadata: contains NUL",
        ),
        (with_messages(seed(id="m\x00")), "messages[0].id: contains NUL"),
        ({"conversation_id": "c\x00", "messages": []}, "conversation_id: contains NUL"),
        (with_messages(tenant_id="t\x00"), "tenant_id: contains NUL"),
        (with_messages(customer_id="\x00"), "customer_id: contains NUL"),
        (with_messages(user_id="u\x00"), "user_id: contains NUL"),
    ],
)
def test_nul_outside_content_is_a_decode_error(doc: object, expected: str) -> None:
    assert decode_error(doc) == expected


def test_deep_metadata_is_a_decode_error() -> None:
    deep = b'{"n": ' * 300 + b"1" + b"}" * 300
    raw = b'{"messages": [{"role": "user", "content": "x", "metadata": ' + deep + b"}]}"

    with pytest.raises(DecodeError) as caught:
        decode_raw(raw)

    assert str(caught.value) == "messages[0].metadata: nested more than 200 levels"


def test_deep_content_blocks_are_a_decode_error() -> None:
    raw = b'{"messages": [{"role": "user", "content": ' + b"[" * 500 + b"]" * 500 + b"}]}"

    with pytest.raises(DecodeError, match="cannot be stored as JSON"):
        decode_raw(raw)


# --- LangChain forms -----------------------------------------------------------------------------


def constructor(class_name: str, /, **kwargs: object) -> dict[str, object]:
    path = ["langchain_core", "messages", class_name]
    return {"lc": 1, "type": "constructor", "id": path, "kwargs": kwargs}


@pytest.mark.parametrize(
    ("name", "role"),
    [
        ("HumanMessage", "user"),
        ("HumanMessageChunk", "user"),
        ("AIMessage", "assistant"),
        ("AIMessageChunk", "assistant"),
        ("SystemMessage", "system"),
        ("ToolMessage", "tool"),
        ("ToolMessageChunk", "tool"),
        ("FunctionMessage", "tool"),
    ],
)
def test_constructor_classes_map_to_roles(name: str, role: str) -> None:
    message = decode_doc(with_messages(constructor(name, content="x"))).messages[0]

    assert message.role == role
    assert message.metadata["lc_id"] == ["langchain_core", "messages", name]


@pytest.mark.parametrize(
    ("kind", "role"),
    [("human", "user"), ("ai", "assistant"), ("AIMessageChunk", "assistant"), ("tool", "tool")],
)
def test_typed_kinds_map_to_roles(kind: str, role: str) -> None:
    message = decode_doc(with_messages({"type": kind, "data": {"content": "x"}})).messages[0]

    assert message.role == role
    assert "lc_id" not in message.metadata


def test_chat_message_takes_its_role_from_kwargs() -> None:
    doc = with_messages(
        constructor("ChatMessage", content="x", role="ai"),
        {"type": "chat", "data": {"content": "y", "role": "system"}},
    )

    assert [m.role for m in decode_doc(doc).messages] == ["assistant", "system"]


def test_langchain_timestamps_and_none_values() -> None:
    doc = with_messages(
        constructor("HumanMessage", content="a", timestamp="2026-11-21T10:00:00Z", name=None),
        constructor("AIMessage", content="b", additional_kwargs={"timestamp": "2026-11-21T11:00"}),
    )

    first, second = decode_doc(doc).messages

    assert first.timestamp == utc(2026, 11, 21, 10)
    assert "name" not in first.metadata
    assert "timestamp" not in first.metadata
    assert "timestamp_source" not in first.metadata
    assert second.timestamp == utc(2026, 11, 21, 11)
    assert second.metadata["additional_kwargs"] == {"timestamp": "2026-11-21T11:00"}


def test_langchain_content_blocks_are_stored_as_json() -> None:
    blocks = [{"type": "text", "text": "hi"}]

    message = decode_doc(with_messages(constructor("HumanMessage", content=blocks, id=3)))

    assert message.messages[0].key == "id:3"
    assert orjson.loads(message.messages[0].content) == blocks
    assert message.messages[0].metadata["content_type"] == "json"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (constructor("RemoveMessage", id="x"), "messages[0].id: not a supported LangChain"),
        ({"lc": 1, "type": "secret", "id": ["K"]}, "messages[0].type: not a LangChain constructor"),
        ({"lc": 1, "type": "constructor", "id": []}, "messages[0].id: not a LangChain class path"),
        ({"lc": 1, "type": "constructor", "id": [1]}, "messages[0].id: not a LangChain class"),
        ({"lc": 1, "type": "constructor", "id": ["AIMessage"]}, "messages[0].kwargs: not an"),
        ({"type": "robot", "data": {"content": "x"}}, "messages[0].type: not a supported"),
        ({"type": 3, "data": {"content": "x"}}, "messages[0].type: not a string"),
        ({"type": "human", "data": "x"}, "messages[0].data: not an object"),
        ({"type": "human", "data": {}}, "messages[0].data.content: not a string"),
        ({"type": "chat", "data": {"content": "x"}}, "messages[0].data.role: not a string"),
        (constructor("AIMessage", content="x", id=[1]), "messages[0].kwargs.id: not a string"),
        (constructor("AIMessage", content="x", name="\x00"), "messages[0].kwargs: contains NUL"),
    ],
)
def test_invalid_langchain_messages_are_decode_errors(message: object, expected: str) -> None:
    assert decode_error(with_messages(message)).startswith(expected)


# --- bytes-level failures ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"conversation_id": "c", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
        b'{"conversation_id": "c", "messages": [{"role": "user", "content": "\\ud800"}]}',
        b'{"conversation_id": "\\udfff", "messages": []}',
        b"",
        b"\xef\xbb\xbf",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
    ids=["utf8", "lone-high", "lone-low", "empty", "bom", "deep", "deep-messages"],
)
def test_undecodable_bytes_are_decode_errors(raw: bytes) -> None:
    with pytest.raises(DecodeError, match=r"^payload: not valid JSON"):
        decode_raw(raw)


def test_oversized_payload_is_refused_before_parsing() -> None:
    raw = orjson.dumps(with_messages(seed("x" * 200)))

    with pytest.raises(DecodeError, match="over the limit of 100"):
        decode_raw(raw, CodecOptions(max_payload_bytes=100))
    assert decode_raw(raw, CodecOptions(max_payload_bytes=len(raw))).messages


def test_error_messages_never_quote_the_payload() -> None:
    docs: list[object] = [
        with_messages(seed(SECRET, timestamp=SECRET)),
        with_messages(seed(SECRET, role=SECRET)),
        with_messages(seed(SECRET, metadata={SECRET: SECRET + "\x00"})),
        with_messages({"type": SECRET, "data": {"content": SECRET}}),
    ]
    for doc in docs:
        assert SECRET not in decode_error(doc)


def test_unexpected_exceptions_become_decode_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*_: object) -> None:
        raise KeyError(SECRET)

    monkeypatch.setattr(codecs, "_checkpoint", explode)

    with pytest.raises(DecodeError) as caught:
        decode_doc(with_messages())
    assert str(caught.value) == "unexpected KeyError while decoding"
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


# --- pickles -------------------------------------------------------------------------------------

ALLOW_PICKLE = CodecOptions(allow_pickle=True)


def pickled_checkpoint() -> dict[str, object]:
    return {
        "conversation_id": "pickled-1",
        "customer_id": 99,
        "messages": [
            {
                "role": "user",
                "content": "hi",
                "timestamp": datetime(2026, 11, 21, 10, 0, tzinfo=timezone(timedelta(hours=1))),
                "metadata": {"tags": {"b", "a"}, "wait": timedelta(seconds=90)},
            },
            {"role": "assistant", "content": "hello", "timestamp": datetime(2026, 11, 21, 9, 5)},
            {"role": "tool", "content": "t", "timestamp": None},
        ],
    }


def test_pickle_is_refused_by_default() -> None:
    raw = pickle.dumps(pickled_checkpoint())

    with pytest.raises(DecodeError) as caught:
        decode_raw(raw)
    assert str(caught.value) == PICKLE_REFUSED


@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_restricted_pickle_with_datetimes_is_accepted(protocol: int) -> None:
    raw = pickle.dumps(pickled_checkpoint(), protocol=protocol)
    options = CodecOptions(allow_pickle=True, timezone=MADRID)

    checkpoint = decode_raw(raw, options)

    assert checkpoint.conversation_id == "pickled-1"
    assert checkpoint.customer_id == "99"
    first, second, third = checkpoint.messages
    assert first.timestamp == utc(2026, 11, 21, 9, 0)
    assert first.metadata == {"tags": ["a", "b"], "wait": 90.0}
    assert second.timestamp == utc(2026, 11, 21, 8, 5)
    assert third.timestamp == KEY_TIME
    assert third.metadata == {"timestamp_source": "checkpoint"}


def test_pickle_and_json_forms_give_the_same_keys() -> None:
    doc = with_messages(seed("same"), seed("same"))
    as_pickle = decode_raw(pickle.dumps(doc), ALLOW_PICKLE)

    assert as_pickle == decode_doc(doc)


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[[str], int], tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    raw = pickle.dumps(with_messages(_Exploit(marker)))

    with pytest.raises(DecodeError) as caught:
        decode_raw(raw, ALLOW_PICKLE)

    assert "pickle payload refused: global" in str(caught.value)
    assert "system" in str(caught.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "value",
    [eval, Path("/tmp"), b"raw bytes", 2**70, complex(1, 2)],
    ids=["builtin-function", "class-instance", "bytes", "huge-int", "complex"],
)
def test_pickled_values_outside_json_are_refused(value: object) -> None:
    raw = pickle.dumps(with_messages(seed(metadata={"v": value})))

    with pytest.raises(DecodeError, match=r"^pickle payload"):
        decode_raw(raw, ALLOW_PICKLE)


def test_pickled_codecs_encode_is_admitted_for_latin1_only() -> None:
    raw = b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x05\x00\x00\x00rot13\x86R."

    with pytest.raises(DecodeError, match="latin1 only"):
        decode_raw(raw, ALLOW_PICKLE)


def test_pickle_with_exponential_sharing_is_refused() -> None:
    layer: list[object] = ["x" * 64]
    for _ in range(40):
        layer = [layer, layer]
    raw = pickle.dumps(with_messages(extra=layer))

    with pytest.raises(DecodeError, match="cyclic references expand it too far"):
        decode_raw(raw, ALLOW_PICKLE)


def test_pickle_over_the_limit_once_expanded_is_refused() -> None:
    shared = "x" * 300
    raw = pickle.dumps(with_messages(*(seed(shared, id=n) for n in range(5))))
    options = CodecOptions(allow_pickle=True, max_payload_bytes=900)

    with pytest.raises(DecodeError, match="would exceed the limit of 900"):
        decode_raw(raw, options)
    assert len(raw) < 900


def test_cyclic_pickle_is_refused() -> None:
    loop: list[object] = []
    loop.append(loop)

    with pytest.raises(DecodeError, match="cyclic references expand it too far"):
        decode_raw(pickle.dumps(with_messages(extra=loop)), ALLOW_PICKLE)


@pytest.mark.parametrize("raw", [b"\x80", b"\x80\x05", b"\x80\x04\x95garbage", b"\x80\x02]q\x00"])
def test_broken_pickles_are_decode_errors(raw: bytes) -> None:
    with pytest.raises(DecodeError, match=r"^pickle payload|^payload"):
        decode_raw(raw, ALLOW_PICKLE)


def test_a_pickle_of_millions_of_containers_is_refused_before_building_them() -> None:
    """60 MB of EMPTY_DICT opcodes took 4.7 GB: the container limit stops it at once."""
    raw = b"\x80\x04" + pickle.EMPTY_DICT * (codecs.PICKLE_MAX_CONTAINERS + 10) + pickle.STOP

    with pytest.raises(DecodeError, match="containers"):
        decode_raw(raw, ALLOW_PICKLE)


def test_a_pickle_of_too_many_opcodes_is_refused() -> None:
    raw = b"\x80\x04" + pickle.NONE * (codecs.PICKLE_MAX_OPCODES + 10) + pickle.STOP

    with pytest.raises(DecodeError, match="opcodes"):
        decode_raw(raw, ALLOW_PICKLE)


COLLIDING = 2**61 - 1  # CPython hashes an int modulo this: its multiples all hash to 0


class _SetOf:
    """Pickles as `set(items)` (protocol 2's form) without building the set here."""

    def __init__(self, items: list[int]) -> None:
        self.items = items

    def __reduce__(self) -> tuple[type[set[int]], tuple[list[int]]]:
        return (set, (self.items,))


def _with_set_opcodes(items: list[int]) -> bytes:
    """The same checkpoint as protocol 4 writes a set (EMPTY_SET, MARK, items, ADDITEMS): the
    list of a protocol-2 pickle turned into a set in place (no set is built here either)."""
    raw = pickle.dumps(with_messages(seed(metadata={"s": items})), protocol=2)
    ops = [(op, at or 0) for op, _, at in pickletools.genops(raw)]
    start = next(i for i, (op, _) in enumerate(ops) if op.name == "EMPTY_LIST"
                 and ops[i + 3][0].name == "LONG1")  # fmt: skip
    patched = bytearray(raw)
    patched[ops[start][1]] = pickle.EMPTY_SET[0]
    for op, at in ops[start:]:
        if op.name == "APPENDS":
            patched[at] = pickle.ADDITEMS[0]
        if op.name in ("SETITEM", "SETITEMS"):
            break
    return bytes(patched)


@pytest.mark.timeout(60)  # quadratic before (40,000 items: 15 s; these: many minutes)
@pytest.mark.parametrize("form", ["reduce", "opcodes"])
def test_a_pickled_set_of_colliding_integers_is_not_hashed(form: str) -> None:
    """A set is kept as a list: no item is hashed, so items chosen to collide cost nothing."""
    colliding = [k * COLLIDING for k in range(1, 200_000)]
    if form == "reduce":
        raw = pickle.dumps(with_messages(seed(metadata={"s": _SetOf(colliding)})), protocol=2)
    else:
        raw = _with_set_opcodes(colliding)

    with pytest.raises(DecodeError, match="no JSON form"):  # beyond 64 bits: refused after
        decode_raw(raw, ALLOW_PICKLE)


def test_a_pickled_dict_with_keys_that_are_not_strings_is_refused_at_once() -> None:
    raw = pickle.dumps(with_messages(seed(metadata={k * COLLIDING: 1 for k in range(1, 50)})))

    with pytest.raises(DecodeError, match="a dict key is not a string"):
        decode_raw(raw, ALLOW_PICKLE)


@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_pickled_sets_become_their_distinct_items_sorted(protocol: int) -> None:
    metadata = {"s": {3, 1, 2}, "f": frozenset({"b", "a"}), "empty": set()}
    raw = pickle.dumps(with_messages(seed(metadata=metadata)), protocol=protocol)

    (message,) = decode_raw(raw, ALLOW_PICKLE).messages
    assert message.metadata == {"s": [1, 2, 3], "f": ["a", "b"], "empty": []}


# --- properties ----------------------------------------------------------------------------------

TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
STAMPS = st.one_of(
    st.none(),
    TEXT,
    st.datetimes(timezones=st.sampled_from([None, UTC, timezone(timedelta(hours=-7))])).map(
        datetime.isoformat
    ),
)
INTS = st.integers(-(2**63), 2**63 - 1)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    INTS,
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=12,
)
SEED_MESSAGES = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "assistant", "system", "tool", "human", "ai", "x"]),
        "content": st.one_of(TEXT, JSON),
    },
    optional={"timestamp": STAMPS, "metadata": JSON, "id": st.one_of(TEXT, INTS)},
)
LANGCHAIN_MESSAGES = st.builds(
    lambda kind, fields: {"type": kind, "data": fields},
    st.sampled_from(["human", "ai", "system", "tool", "chat", "AIMessageChunk", "x"]),
    st.dictionaries(
        st.sampled_from(["content", "id", "role", "timestamp", "additional_kwargs", "name"]),
        st.one_of(TEXT, STAMPS, JSON),
    ),
)
DOCUMENTS = st.fixed_dictionaries(
    {"messages": st.lists(st.one_of(SEED_MESSAGES, LANGCHAIN_MESSAGES, JSON), max_size=5)},
    optional={
        "conversation_id": st.one_of(TEXT, JSON),
        "tenant_id": st.one_of(TEXT, JSON),
        "customer_id": st.one_of(TEXT, INTS, JSON),
        "conversation_summary": st.one_of(TEXT, JSON),
    },
)


def check_decodes_or_refuses(raw: bytes, options: CodecOptions) -> None:
    try:
        checkpoint = decode_raw(raw, options)
    except DecodeError:
        return
    keys = [m.key for m in checkpoint.messages]
    assert len(keys) == len(set(keys))
    assert checkpoint.conversation_id
    for message in checkpoint.messages:
        assert message.role in model.ROLES
        assert "\x00" not in message.content
        assert message.timestamp.utcoffset() == timedelta(0)
        assert 1970 <= message.timestamp.year <= 2199


@settings(max_examples=300, database=None, deadline=None)
@given(raw=st.binary(max_size=256), allow_pickle=st.booleans())
def test_arbitrary_bytes_decode_or_raise_decode_error(raw: bytes, allow_pickle: bool) -> None:
    check_decodes_or_refuses(raw, CodecOptions(allow_pickle=allow_pickle))


@settings(max_examples=200, database=None, deadline=None)
@given(raw=st.binary(max_size=256).map(lambda tail: b"\x80\x04" + tail))
def test_arbitrary_pickle_bytes_decode_or_raise_decode_error(raw: bytes) -> None:
    check_decodes_or_refuses(raw, ALLOW_PICKLE)


@settings(
    max_examples=300, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(doc=st.one_of(DOCUMENTS, JSON))
def test_arbitrary_documents_decode_or_raise_decode_error(doc: Any) -> None:
    check_decodes_or_refuses(orjson.dumps(doc), CodecOptions())
    check_decodes_or_refuses(pickle.dumps(doc), ALLOW_PICKLE)

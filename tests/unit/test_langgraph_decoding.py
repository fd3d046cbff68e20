"""The langgraph-redis source without servers: which keys, when, decoding, mapping, trimming."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from consumer import codecs, exceptions
from consumer.sources import langgraph_redis as lg

CID = "1f1f28dd-7d29-683d-8000-ded32a568d5d"
KEY = f"checkpoint:acme/t-1:__empty__:{CID}"


def source(pattern: str | None = None, fields: str | None = None) -> lg.LangGraphRedis:
    return lg.LangGraphRedis(codecs.CodecOptions(), lg.Mapping.parse(pattern, fields), False)


def message(kind: str, content: str, ident: str | None = None, **extra: Any) -> dict[str, Any]:
    kwargs = {"content": content, "type": kind, **extra}
    if ident:
        kwargs["id"] = ident
    name = {"human": "HumanMessage", "ai": "AIMessage", "tool": "ToolMessage"}[kind]
    return {"lc": 1, "type": "constructor", "id": ["langchain", "schema", "messages", name],
            "kwargs": kwargs}  # fmt: skip


def document(messages: list[Any], **values: Any) -> dict[str, Any]:
    return {
        "thread_id": "acme/t-1", "checkpoint_ns": "__empty__", "checkpoint_id": CID,
        "metadata": orjson.dumps({"step": 3, "source": "loop"}).decode(),
        "checkpoint": {"ts": "2026-12-07T22:30:45.040927+00:00", "id": CID,
                       "channel_values": {"messages": messages, **values}},
    }  # fmt: skip


def raw(doc: dict[str, Any], writes: list[Any] | None = None) -> bytes:
    value = orjson.dumps(doc)
    return value if writes is None else value + b"\n" + orjson.dumps(writes)


def test_root_checkpoints_are_archived_and_the_rest_is_not() -> None:
    s = source()
    assert s.is_checkpoint(KEY)
    assert s.is_checkpoint("checkpoint:with:colons:__empty__:" + CID)
    assert s.is_checkpoint("checkpoint:t-1:")  # ShallowRedisSaver
    assert not s.is_checkpoint(f"checkpoint:t-1:inner:{CID}:{CID}")  # a subgraph's
    assert not s.is_checkpoint("checkpoint_latest:t-1:__empty__")
    assert not s.is_checkpoint(f"checkpoint_write:t-1:__empty__:{CID}:task:0")


def test_a_checkpoint_time_comes_from_its_uuid6_id() -> None:
    # 1f1f28dd-7d29-683d: 2026-12-07T22:30:45.04Z (the document's checkpoint.ts)
    assert source().written_ms(KEY) // 1000 == 1796682645
    assert source().written_ms("checkpoint:t-1:") == -1


def test_messages_decode_with_roles_tool_calls_and_origin() -> None:
    call = {"name": "lookup", "args": {"order": "42"}, "id": "call-1", "type": "tool_call"}
    doc = document([
        message("human", "Where is 42?", "h1"),
        message("ai", "", "a1", tool_calls=[call]),
        message("tool", "shipped", "t1", tool_call_id="call-1", name="lookup"),
    ])  # fmt: skip
    c = source().decode(KEY, raw(doc))
    assert (c.tenant_id, c.conversation_id) == ("default", "acme/t-1")
    assert [(m.key, m.role) for m in c.messages] == [
        ("id:h1", "user"), ("id:a1", "assistant"), ("id:t1", "tool"),
    ]  # fmt: skip
    assert c.messages[1].metadata["tool_calls"][0]["id"] == "call-1"
    assert c.messages[2].metadata["tool_call_id"] == "call-1"
    assert c.messages[0].metadata["checkpoint_id"] == CID
    assert c.messages[0].metadata["checkpoint_step"] == 3
    assert c.messages[0].timestamp.isoformat() == "2026-12-07T22:30:45.040927+00:00"


def test_the_has_writes_stub_is_not_ready_never_a_decode_error() -> None:
    with pytest.raises(exceptions.NotReadyError):
        source().decode(KEY, b'{"has_writes":true}')


def test_a_subgraph_document_is_refused() -> None:
    doc = document([]) | {"checkpoint_ns": "inner:x"}
    with pytest.raises(exceptions.DecodeError):
        source().decode(KEY, raw(doc))


def test_thread_pattern_and_state_fields_map_the_owner() -> None:
    s = source(r"(?P<tenant_id>[^/]+)/(?P<conversation_id>.+)", "user_id=user.id,customer_id=org")
    doc = document([message("human", "hi", "h1")], user={"id": "u-7"}, org=12)
    c = s.decode(KEY, raw(doc))
    assert (c.tenant_id, c.conversation_id, c.user_id, c.customer_id) == (
        "acme",
        "t-1",
        "u-7",
        "12",
    )


def test_a_thread_the_pattern_does_not_match_is_a_decode_error() -> None:
    with pytest.raises(exceptions.DecodeError, match="ARCHIVER_THREAD_PATTERN"):
        source(r"(?P<tenant_id>\d+)-(?P<conversation_id>.+)").decode(KEY, raw(document([])))


@pytest.mark.parametrize(("pattern", "fields"), [("(?P<who>.+)", None), ("(", None), (None, "x=y")])
def test_bad_mappings_are_configuration_errors(pattern: str | None, fields: str | None) -> None:
    with pytest.raises(exceptions.ConfigError):
        lg.Mapping.parse(pattern, fields)


def blob(value: Any) -> str:
    return base64.b64encode(orjson.dumps(value)).decode()


def test_pending_writes_on_the_messages_channel_of_this_checkpoint_are_archived() -> None:
    writes = [
        {"checkpoint_id": CID, "channel": "messages", "type": "json",
         "blob": blob([message("tool", "shipped", tool_call_id="call-1")])},
        {"checkpoint_id": CID, "channel": "branch:to:agent", "type": "null", "blob": ""},
        {"checkpoint_id": "older", "channel": "messages", "type": "json",
         "blob": blob([message("human", "old")])},
        {"checkpoint_id": CID, "channel": "messages", "type": "json",
         "blob": blob({"lc": 1, "type": "constructor", "id": ["RemoveMessage"],
                       "kwargs": {"type": "remove", "id": "h1"}})},
    ]  # fmt: skip
    c = source().decode(KEY, raw(document([message("human", "hi", "h1")]), writes))
    assert [m.content for m in c.messages] == ["hi", "shipped"]
    assert c.messages[1].key.startswith("h:")  # no id yet: keyed by its content


def test_messages_archived_already_are_not_sent_again() -> None:
    s = source()
    first = s.decode(KEY, raw(document([message("human", "hi", "h1")])))
    s.remember([first])
    both = raw(document([message("human", "hi", "h1"), message("ai", "hello", "a1")]))
    assert [m.key for m in s.unseen([s.decode(KEY, both)])[0].messages] == ["id:a1"]


def test_a_batch_sends_each_message_of_a_thread_once() -> None:
    s = source()
    one = s.decode(KEY, raw(document([message("human", "hi", "h1")])))
    two = s.decode(KEY, raw(document([message("human", "hi", "h1"), message("ai", "yo", "a1")])))
    assert [[m.key for m in c.messages] for c in s.unseen([one, two])] == [["id:h1"], ["id:a1"]]


def deleting() -> lg.LangGraphRedis:
    return lg.LangGraphRedis(codecs.CodecOptions(), lg.Mapping(), True)


def test_a_thread_is_deleted_whole_only_with_delete_archived() -> None:
    assert source().thread_of(KEY) is None
    thread = deleting().thread_of(KEY)
    assert thread is not None
    assert thread.thread == "acme/t-1"
    assert thread.query == r"@thread_id:{acme\/t\-1}"  # a tag: punctuation escaped
    assert thread.latest == "checkpoint_latest:acme/t-1:__empty__"
    assert thread.writes_index == f"write_keys_zset:acme/t-1:__empty__:{CID}"
    shallow = deleting().thread_of("checkpoint:acme/t-1:")
    assert shallow is not None and shallow.latest is None
    assert shallow.writes_index == "write_registry:acme/t-1:__empty__:shallow"


def test_a_threads_keys_are_every_family_of_that_thread_only() -> None:
    thread = deleting().thread_of(KEY)
    assert thread is not None
    sub = f"checkpoint:acme/t-1:inner:{CID}:{CID}"
    write = f"checkpoint_write:acme/t-1:__empty__:{CID}:task:0"
    other_case = f"checkpoint:ACME/t-1:__empty__:{CID}"  # a tag matches case-insensitively
    roots, others = thread.members([KEY, sub, write, other_case])
    assert roots == [KEY]
    assert set(others) == {
        sub, write, f"checkpoint_latest:acme/t-1:inner:{CID}", f"write_keys_zset:acme/t-1:inner:{CID}:{CID}",
        "checkpoint_latest:acme/t-1:__empty__", f"write_keys_zset:acme/t-1:__empty__:{CID}",
    }  # fmt: skip

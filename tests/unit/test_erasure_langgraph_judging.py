"""How the erasure's Redis step judges LangGraph documents and attributes keys to threads."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from consumer import codecs
from consumer.erasure import langgraph_side, subjects
from consumer.sources import langgraph_redis

REQUESTED = datetime.fromisoformat("2026-12-01T00:00:00+00:00")
BEFORE = "2026-11-30T10:00:00+00:00"
AFTER = "2026-12-02T10:00:00+00:00"
ROOT = "checkpoint:{}:__empty__:1f1f2a5c-6cf7-62e7-8004-475ae413b243"
PATTERN = r"(?P<tenant_id>[^/]+)/(?P<customer_id>[^/]+)/(?P<conversation_id>.+)"


def source(pattern: str | None = PATTERN, fields: str | None = "user_id=user.id") -> Any:
    mapping = langgraph_redis.Mapping.parse(pattern, fields)
    return langgraph_redis.LangGraphRedis(codecs.CodecOptions(), mapping, False)


def document(thread: str, ts: str, user: str = "u-7", ns: str = "__empty__") -> bytes:
    message = {"lc": 1, "type": "constructor", "id": ["langchain", "HumanMessage"],
               "kwargs": {"content": "hello", "type": "human", "id": "m-1"}}  # fmt: skip
    return orjson.dumps({
        "thread_id": thread, "checkpoint_ns": ns, "checkpoint_id": "1f1f2a5c",
        "checkpoint": {"ts": ts, "channel_values": {"messages": [message], "user": {"id": user}}},
        "metadata": "{}",
    })  # fmt: skip


def subject(kind: str, ident: str, tenant: str = "acme") -> subjects.Subject:
    return subjects.Subject(tenant, kind, ident, REQUESTED)


def judge(s: subjects.Subject, key: str, raw: bytes, src: Any = None) -> Any:
    return langgraph_side.judge_document(src or source(), s, key, raw)


def test_a_root_document_is_judged_by_the_mapping_and_its_messages_times() -> None:
    thread = "acme/anna/c1"
    raw = document(thread, BEFORE)
    assert judge(subject("customer", "anna"), ROOT.format(thread), raw) == (thread, True)
    assert judge(subject("user", "u-7"), ROOT.format(thread), raw) == (thread, True)
    assert judge(subject("conversation", "c1"), ROOT.format(thread), raw) == (thread, True)
    assert judge(subject("user", "u-8"), ROOT.format(thread), raw) == (thread, False)
    assert judge(subject("customer", "anna", "globex"), ROOT.format(thread), raw) == (
        thread, False)  # fmt: skip
    later = document(thread, AFTER)  # the subject came back after the erasure
    assert judge(subject("customer", "anna"), ROOT.format(thread), later) == (thread, False)


def test_a_subgraph_document_is_judged_by_its_thread_id_and_its_time() -> None:
    thread = "acme/anna/c1"
    key = f"checkpoint:{thread}:inner:0b8c4c4e-0000-4000-8000-000000000000:1f1f"
    raw = document(thread, BEFORE, ns="inner:0b8c4c4e-0000-4000-8000-000000000000")
    assert judge(subject("customer", "anna"), key, raw) == (thread, True)
    assert judge(subject("user", "u-7"), key, raw) == (thread, False)  # its state names no one
    late = document(thread, AFTER, ns="inner:0b8c4c4e-0000-4000-8000-000000000000")
    assert judge(subject("customer", "anna"), key, late) == (thread, False)


def test_without_a_mapping_only_the_thread_as_conversation_of_the_default_tenant_matches() -> None:
    bare = source(None, None)
    thread = "acme/anna/c1"
    raw = document(thread, BEFORE)
    key = ROOT.format(thread)
    assert judge(subject("conversation", thread, "default"), key, raw, bare) == (thread, True)
    assert judge(subject("customer", "anna"), key, raw, bare) == (thread, False)
    assert judge(subject("user", "u-7", "default"), key, raw, bare) == (thread, False)


def test_a_stub_or_a_document_without_a_thread_names_no_thread() -> None:
    assert judge(subject("customer", "anna"), ROOT.format("t"), b'{"has_writes": true}') is None
    assert judge(subject("customer", "anna"), ROOT.format("t"), b"not json") is None


def test_a_key_goes_to_the_longest_known_thread_id_its_name_starts_with() -> None:
    threads = langgraph_side.Threads({"a", "b:c"}, {"a:b"})
    assert threads.owner("checkpoint:a:__empty__:1f1f") == "a"
    assert threads.owner("checkpoint:a:") == "a"  # ShallowRedisSaver
    assert threads.owner("checkpoint_latest:a:__empty__") == "a"
    assert threads.owner("write_registry:a:__empty__:shallow") == "a"
    assert threads.owner("write_keys_zset:a:b:__empty__:1f1f") is None  # thread a:b's
    assert threads.owner("checkpoint_write:b:c:__empty__:1f1f:task:0") == "b:c"
    assert threads.owner("checkpoint_write:b:__empty__:1f1f:task:0") is None
    assert threads.owner("archiver:shadow:{checkpoint:a:__empty__:1f1f}") is None
    assert threads.owner("checkpoint:ab:__empty__:1f1f") is None


def test_the_thread_id_alone_decides_unless_a_state_field_gives_what_names_the_subject() -> None:
    by_user = source(PATTERN, "user_id=user.id")
    assert langgraph_side.thread_decides(by_user, subject("customer", "anna"))
    assert langgraph_side.thread_decides(by_user, subject("conversation", "c1"))
    assert not langgraph_side.thread_decides(by_user, subject("user", "u-7"))
    by_tenant = source(None, "tenant_id=tenant")
    assert not langgraph_side.thread_decides(by_tenant, subject("conversation", "c1"))
    assert langgraph_side.thread_decides(source(None, None), subject("user", "u-7"))


def test_a_first_checkpoint_without_messages_is_judged_by_its_own_time() -> None:
    thread = "acme/anna/c1"
    empty = orjson.loads(document(thread, AFTER))
    empty["checkpoint"]["channel_values"] = {"__start__": {"messages": []}}
    raw = orjson.dumps(empty)
    assert judge(subject("customer", "anna"), ROOT.format(thread), raw) == (thread, False)
    empty["checkpoint"]["ts"] = BEFORE
    raw = orjson.dumps(empty)
    assert judge(subject("customer", "anna"), ROOT.format(thread), raw) == (thread, True)

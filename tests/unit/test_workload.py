"""The simulated workload: what it writes decodes as it expects, feature by feature."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from consumer import codecs
from consumer.demo import workload
from consumer.exceptions import DecodeError

KEY_TIME = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def scripts(n: int = 120, **plan: object) -> list[workload.Script]:
    p = workload.Plan(conversations=n, tag="t0", **plan)  # type: ignore[arg-type]
    rng = random.Random(p.seed)
    return [workload.script(i, p, rng) for i in range(p.conversations)]


def played(s: workload.Script) -> list[workload.Checkpoint]:
    """Every checkpoint of a conversation, two seconds apart, without Redis."""
    lines: list[workload.Line] = []
    written = []
    for n in range(s.checkpoints):
        lines += workload.exchange(s, n, KEY_TIME + timedelta(seconds=2 * n))
        written.append(workload.checkpoint(s, n, lines))
    return written


def decode(s: workload.Script, c: workload.Checkpoint, n: int) -> set[tuple[str, str]]:
    checkpoint = codecs.decode(
        f"langgraph:checkpoint:{s.conversation_id}:{n}",
        c.payload,
        key_conversation_id=s.conversation_id,
        key_time=KEY_TIME + timedelta(seconds=2 * n),
        options=codecs.CodecOptions(),
    )
    return {(checkpoint.conversation_id, m.key) for m in checkpoint.messages}


def test_expected_identities_are_exactly_what_the_archiver_decodes() -> None:
    expected: Counter[str] = Counter()
    decoded: set[tuple[str, str]] = set()
    for s in scripts():
        carried: set[str] = set()
        for n, c in enumerate(played(s)):
            if c.carries is None:
                with pytest.raises(DecodeError):
                    decode(s, c, n)
                continue
            carried |= c.carries
            decoded |= decode(s, c, n)
        expected[s.conversation_id] = len(carried)
    assert Counter(conversation for conversation, _ in decoded) == expected


def test_the_mix_holds_every_kind_of_producer_and_payload() -> None:
    mix = scripts()
    assert {s.style for s in mix} == {"seed", "constructor", "typed"}
    assert sum(s.shadowless for s in mix) == 30
    assert sum(s.malformed_at is not None for s in mix) == 5
    assert {s.malformed for s in mix if s.malformed_at is not None} == {
        "truncated",
        "shape",
        "role",
    }
    assert any(s.late_customer for s in mix)
    assert any(s.summarize_from is not None for s in mix)
    assert any(":" in s.conversation_id for s in mix)


def test_the_showcase_conversation_is_identified_late_and_summarized() -> None:
    s = scripts(1, max_checkpoints=2)[0]
    assert s.checkpoints >= 5
    assert s.malformed_at is None
    docs = [orjson.loads(c.payload) for c in played(s)]
    assert [d["customer_id"] is None for d in docs] == [True, True] + [False] * (len(docs) - 2)
    assert "conversation_summary" not in docs[3]
    assert "conversation_summary" in docs[4]
    assert len(docs[4]["messages"]) == workload.KEEP_AFTER_SUMMARY
    assert len(docs[3]["messages"]) == 8  # the list grows by one exchange per checkpoint


def test_langchain_conversations_use_both_serialized_forms() -> None:
    mix = scripts(10)
    constructor = next(s for s in mix if s.style == "constructor")
    typed = next(s for s in mix if s.style == "typed")
    first = orjson.loads(played(constructor)[1].payload)["messages"]
    assert first[0]["lc"] == 1
    assert any(m["kwargs"].get("tool_calls") for m in first)
    assert orjson.loads(played(typed)[0].payload)["messages"][0]["type"] == "human"

"""The data: seed-format checkpoints (conversation, tenant, customer, messages) and their rows.

One generator feeds the archiver (as JSON payloads in Redis), the floor (as rows for COPY) and
the naive design (the same payloads), so that every reference runs on the same data.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

PATTERN = "langgraph:checkpoint:{conversation_id}:{timestamp}"
SHADOW_PREFIX = "archiver:shadow:"
DEADLINES = "archiver:deadlines"
TENANTS = 20
_WORDS = (
    "hola",
    "quiero",
    "reservar",
    "un",
    "corte",
    "para",
    "el",
    "viernes",
    "por",
    "la",
    "tarde",
    "después",
    "de",
    "las",
    "17h",
    "claro",
    "prefieres",
    "mañana",
    "o",
    "tarde",
    "tengo",
    "hueco",
    "a",
    "las",
    "17:30",
    "con",
    "Marta",
    "te",
    "lo",
    "reservo",
    "thanks",
    "the",
    "order",
    "arrived",
    "damaged",
    "can",
    "I",
    "get",
    "a",
    "refund",
    "or",
    "a",
    "replacement",
    "please",
    "¿puedo",
    "cambiar",
    "la",
    "cita?",
    "sure",
    "let",
    "me",
    "check",
    "the",
    "calendar",
    "for",
    "next",
    "week",
    "ñandú",
    "café",
)


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str
    timestamp: datetime
    metadata: dict[str, str] | None


@dataclass(frozen=True, slots=True)
class Conversation:
    """One checkpoint's content: the seed format of tests/data/samples/basic.json."""

    conversation_id: str
    tenant_id: str
    customer_id: str
    written_ts: int
    messages: tuple[Message, ...]

    @property
    def key(self) -> str:
        return PATTERN.format(conversation_id=self.conversation_id, timestamp=self.written_ts)

    def payload(self) -> bytes:
        return orjson.dumps(
            {
                "conversation_id": self.conversation_id,
                "customer_id": self.customer_id,
                "tenant_id": self.tenant_id,
                "messages": [_message_json(m) for m in self.messages],
            }
        )

    def rows(self) -> Iterator[tuple[Any, ...]]:
        """Rows as conversation_history holds them (what the floor loads)."""
        for index, m in enumerate(self.messages):
            yield (
                self.tenant_id, self.customer_id, None, self.conversation_id, m.timestamp,
                m.role, m.content, orjson.dumps(m.metadata or {}).decode(),
                message_key(m, index), self.key,
            )  # fmt: skip


ROW_COLUMNS = (
    "tenant_id", "customer_id", "user_id", "conversation_id", "timestamp", "message_role",
    "message_content", "metadata", "message_key", "source_key",
)  # fmt: skip


def shadow(key: str) -> str:
    """The shadow key of a checkpoint key without a hash tag (consumer/keys.py `_wrap`)."""
    return SHADOW_PREFIX + "{" + key + "}"


def message_key(m: Message, index: int) -> str:
    """A content hash as long as the archiver's `h:` identities."""
    joined = "\x1f".join((m.role, m.timestamp.isoformat(), m.content, str(index)))
    return "h:" + hashlib.sha256(joined.encode()).hexdigest()[:32]


def _message_json(m: Message) -> dict[str, Any]:
    item: dict[str, Any] = {"role": m.role, "content": m.content, "timestamp": m.timestamp}
    if m.metadata:
        item["metadata"] = m.metadata
    return item


class Generator:
    """Deterministic conversations of `messages` messages of about `chars` characters."""

    def __init__(self, messages: int, chars: int, seed: int = 7) -> None:
        self.messages = messages
        self.rng = random.Random(seed)
        self.pool = [self._text(chars) for _ in range(2048)]
        self.base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)

    def _text(self, chars: int) -> str:
        words: list[str] = []
        while sum(len(w) + 1 for w in words) <= chars:
            words.append(self.rng.choice(_WORDS))
        return " ".join(words)[:chars]

    def conversation(self, name: str, written_ts: int) -> Conversation:
        rng = self.rng
        start = self.base + timedelta(seconds=rng.randrange(3600))
        messages = tuple(
            Message(
                role="user" if i % 2 == 0 else "assistant",
                content=self.pool[rng.randrange(len(self.pool))],
                timestamp=start + timedelta(seconds=7 * i),
                metadata={"channel": "whatsapp"} if i % 3 == 2 else None,
            )
            for i in range(self.messages)
        )
        tenant = f"tenant-{rng.randrange(TENANTS):02d}"
        customer = f"{rng.getrandbits(128):032x}"
        return Conversation(name, tenant, customer, written_ts, messages)

    def batch(self, prefix: str, count: int, written_ts: int) -> list[Conversation]:
        return [self.conversation(f"{prefix}-{i}", written_ts) for i in range(count)]


def payload_bytes(conversations: Sequence[Conversation]) -> int:
    return sum(len(c.payload()) for c in conversations[:100]) // max(
        1, min(100, len(conversations))
    )

"""What an erasure erases: a subject (tenant, kind, id) and whether a checkpoint, decoded or
not, is one of its own."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from consumer import codecs, exceptions, fences, keys, model

# A subject id is matched in bytes that cannot be decoded as a whole word: not inside a longer
# id ("c1" is not found in "c12"), the characters ids are commonly made of counting as inside.
_WORD = rb"A-Za-z0-9_.@\-"


@dataclass(frozen=True, slots=True)
class Subject:
    """An erasure's subject, with the conversations it had (for customer and user), and the
    moment before which nothing of it may remain (requested_at, PostgreSQL's clock)."""

    tenant: str
    kind: str
    id: str
    requested_at: datetime
    conversations: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.kind not in fences.KINDS:
            raise exceptions.UsageError(f"an erasure's subject is one of {', '.join(fences.KINDS)}")
        if not self.tenant or not self.id:
            raise exceptions.UsageError("a tenant and a subject id cannot be empty")

    @property
    def conversation_ids(self) -> frozenset[str]:
        """Every conversation erased whole: the subject's, or the subject itself."""
        if self.kind == "conversation":
            return self.conversations | {self.id}
        return self.conversations

    def names(self, c: model.Checkpoint) -> bool:
        """The checkpoint belongs to the subject (whatever its messages' times)."""
        if c.tenant_id != self.tenant:
            return False
        if c.conversation_id in self.conversation_ids:
            return True
        return (self.kind == "customer" and c.customer_id == self.id) or (
            self.kind == "user" and c.user_id == self.id
        )

    def owns(self, c: model.Checkpoint) -> bool:
        """The checkpoint is the subject's and holds something from before the erasure."""
        if not self.names(c):
            return False
        return not c.messages or min(m.timestamp for m in c.messages) <= self.requested_at

    def mentions(self, raw: bytes, conversation: str | None, default_tenant: str) -> bool:
        """Bytes that cannot be decoded (or only a value's first bytes): the subject's if they
        hold its tenant (unless that is the default tenant, which a payload need not name)
        and its id, or the key names one of its conversations."""
        tenant_there = self.tenant == default_tenant or _word(self.tenant).search(raw) is not None
        if not tenant_there:
            return False
        if conversation is not None and conversation in self.conversation_ids:
            return True
        return _word(self.id).search(raw) is not None


def _word(value: str) -> re.Pattern[bytes]:
    body = re.escape(value.encode("utf-8", "surrogateescape"))
    return re.compile(b"(?<![" + _WORD + b"])" + body + b"(?![" + _WORD + b"])")


@dataclass(frozen=True, slots=True)
class Reader:
    """Decodes a stored checkpoint value as the archive path would."""

    layout: keys.Layout
    codec: codecs.CodecOptions

    def decode(self, key: str, raw: bytes) -> model.Checkpoint | None:
        """The checkpoint, or None if it cannot be decoded."""
        info = self.layout.parse(key)
        if info is None:
            return None
        try:
            return codecs.decode(
                key, raw, key_conversation_id=keys.for_storage(info.conversation_id),
                key_time=info.written_at, options=self.codec,
            )  # fmt: skip
        except Exception:  # anything unreadable is matched by its bytes instead
            return None

    def conversation(self, key: str) -> str | None:
        info = self.layout.parse(key)
        return None if info is None else keys.for_storage(info.conversation_id)

    def belongs(self, subject: Subject, key: str, raw: bytes, *, whole: bool = True) -> bool:
        """Whether a value (whole, or only its first bytes) is the subject's."""
        decoded = self.decode(key, raw) if whole else None
        if decoded is not None:
            return subject.owns(decoded)
        return subject.mentions(raw, self.conversation(key), self.codec.default_tenant)

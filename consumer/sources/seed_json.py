"""The seed-json source: one string key per checkpoint, `ARCHIVER_KEY_PATTERN`, holding one
JSON (or, if allowed, pickled) object; its time is the key's {timestamp}; archived keys are
compare-and-deleted."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from consumer import codecs, exceptions, keys, model, notifications
from consumer.sources import langgraph_redis


class SeedJson:
    name = "seed-json"
    reader: Literal["string", "json"] = "string"
    deletes = True
    write_events = ("set", "expire")
    notify_flags = notifications.NEEDED

    def __init__(self, layout: keys.Layout, options: codecs.CodecOptions) -> None:
        self.layout = layout
        self.options = options

    @property
    def scan_match(self) -> str:
        return self.layout.scan_match

    def is_checkpoint(self, key: str) -> bool:
        return self.layout.is_checkpoint(key)

    def written_ms(self, key: str) -> int:
        info = self.layout.parse(key)
        return int(info.written_ts * 1000) if info else -1

    def decode(self, key: str, raw: bytes) -> model.Checkpoint:
        info = self.layout.parse(key)
        if info is None:
            raise exceptions.DecodeError("key does not match ARCHIVER_KEY_PATTERN")
        return codecs.decode(
            key, raw, key_conversation_id=keys.for_storage(info.conversation_id),
            key_time=info.written_at, options=self.options,
        )  # fmt: skip

    def writes_of(self, key: str) -> langgraph_redis.WritesOf | None:
        return None

    def thread_of(self, key: str) -> langgraph_redis.ThreadOf | None:
        return None

    def unseen(self, checkpoints: Sequence[model.Checkpoint]) -> list[model.Checkpoint]:
        return list(checkpoints)

    def remember(self, checkpoints: Sequence[model.Checkpoint]) -> None:
        return None

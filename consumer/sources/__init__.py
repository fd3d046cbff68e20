"""Where checkpoints come from: the `Source` seam of the archive path.

A source says which Redis keys are checkpoints, how the claim/finish/hold scripts read and
compare a value, where a checkpoint's time comes from, how its value decodes, and whether an
archived checkpoint is deleted, deleted with its whole thread, or left to its own TTL. The
archive routine, the sweeper, the listener's auto-arming, dead-letter replay and the demo all
take one; ARCHIVER_SOURCE picks it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, Protocol

from consumer import codecs, keys, model
from consumer.sources import langgraph_redis, seed_json

if TYPE_CHECKING:
    from consumer.settings import Settings

Reader = Literal["string", "json"]


class Source(Protocol):
    """A checkpoint format in Redis."""

    @property
    def name(self) -> str:
        """The value of ARCHIVER_SOURCE that selects it."""

    @property
    def reader(self) -> Reader:
        """How the scripts read a value and compare it (SHA-1): GET, or JSON.GET."""

    @property
    def deletes(self) -> bool:
        """Whether an archived checkpoint is compare-and-deleted (else left to its own TTL)."""

    def thread_of(self, key: str) -> langgraph_redis.ThreadOf | None:
        """How to delete this archived checkpoint's thread whole, if it is (else None: the
        checkpoint alone is deleted, or left to its TTL, as `deletes` says)."""

    @property
    def write_events(self) -> tuple[str, ...]:
        """The keyevents that mean a checkpoint key was written or its TTL changed."""

    @property
    def notify_flags(self) -> str:
        """The notify-keyspace-events flags those events (and `expired`) need."""

    @property
    def scan_match(self) -> str:
        """A SCAN MATCH glob covering every checkpoint key (and maybe more)."""

    def is_checkpoint(self, key: str) -> bool:
        """Whether the archiver archives this key."""

    def written_ms(self, key: str) -> int:
        """When the checkpoint was written, ms since the epoch, from its name; -1 unknown."""

    def writes_of(self, key: str) -> langgraph_redis.WritesOf | None:
        """Where pending writes to read with the checkpoint are listed, if anywhere; they
        follow the value, after a newline, when it is decoded."""

    def decode(self, key: str, raw: bytes) -> model.Checkpoint:
        """The checkpoint a value holds; DecodeError if it is invalid, NotReadyError if it is
        still being written (try again later)."""

    def unseen(self, checkpoints: Sequence[model.Checkpoint]) -> list[model.Checkpoint]:
        """The checkpoints less messages known to be archived already (or as they are)."""

    def remember(self, checkpoints: Sequence[model.Checkpoint]) -> None:
        """These checkpoints were committed."""


def of(settings: Settings, layout: keys.Layout, options: codecs.CodecOptions) -> Source:
    """The source ARCHIVER_SOURCE names."""
    if settings.source == "langgraph-redis":
        mapping = langgraph_redis.Mapping.parse(settings.thread_pattern, settings.state_fields)
        return langgraph_redis.LangGraphRedis(options, mapping, settings.delete_archived)
    return seed_json.SeedJson(layout, options)

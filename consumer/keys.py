"""Every Redis key and channel name the archiver reads or writes, in one place.

Our own keys (shadow, claim) embed the checkpoint key so that, under Redis Cluster, they hash
to the checkpoint's slot: a Lua script may then touch both.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from consumer import exceptions

_FIELDS = ("{conversation_id}", "{timestamp}")


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What a checkpoint key says: its conversation and when it was written."""

    key: str
    conversation_id: str
    written_at: datetime

    @property
    def written_ts(self) -> float:
        return self.written_at.timestamp()


@dataclass(frozen=True, slots=True)
class Layout:
    """The key layout: checkpoint pattern and the prefix of the archiver's own keys."""

    pattern: str
    shadow_prefix: str

    def __post_init__(self) -> None:
        if not self.pattern.endswith("{timestamp}") or "{conversation_id}" not in self.pattern:
            raise exceptions.ConfigError(
                "ARCHIVER_KEY_PATTERN must contain {conversation_id} and end with {timestamp}"
            )
        if self.pattern.startswith(self.prefix) or self.shadow_prefix.startswith(self._head):
            raise exceptions.ConfigError("ARCHIVER_SHADOW_PREFIX must not overlap checkpoint keys")
        if "{" in self.shadow_prefix or "}" in self.shadow_prefix:
            raise exceptions.ConfigError(
                "ARCHIVER_SHADOW_PREFIX must not contain braces (Redis Cluster hash tags)"
            )

    @property
    def prefix(self) -> str:
        """Prefix of the archiver's own keys: the shadow prefix less a trailing 'shadow:'."""
        return self.shadow_prefix.removesuffix("shadow:")

    @property
    def _head(self) -> str:
        return self.pattern.split("{", 1)[0]

    @property
    def scan_match(self) -> str:
        """A SCAN MATCH glob for checkpoint keys."""
        glob = re.sub(r"([*?\[\]\\])", r"\\\1", self.pattern)
        for field in _FIELDS:
            glob = glob.replace(field, "*")
        return glob

    @property
    def regex(self) -> re.Pattern[str]:
        return _compile(self.pattern)

    def parse(self, key: str) -> KeyInfo | None:
        """The key's conversation and write time, or None if it is not a checkpoint key."""
        return _parse(self.pattern, key)

    def is_checkpoint(self, key: str) -> bool:
        return self.regex.match(key) is not None

    def shadow(self, key: str) -> str:
        return self.shadow_prefix + _wrap(key)

    def claim(self, key: str) -> str:
        return self.prefix + "claim:" + _wrap(key)

    def held(self, key: str) -> str:
        """When the checkpoint was first held (Redis's clock), while PostgreSQL fails it."""
        return self.prefix + "held:" + _wrap(key)

    def checkpoint_of_shadow(self, shadow: str) -> str | None:
        """The checkpoint key a shadow key stands for, or None if it is not a shadow."""
        head = self.shadow_prefix
        if not shadow.startswith(head):
            return None
        rest = shadow[len(head) :]
        if rest.startswith("~"):
            return rest[1:]
        if rest.startswith("{") and rest.endswith("}"):
            return rest[1:-1]
        return None

    @property
    def deadlines(self) -> str:
        """Sorted set: checkpoint key -> archive deadline (ms since the epoch)."""
        return self.prefix + "deadlines"

    @property
    def last_sweep(self) -> str:
        """When the last successful sweep (by any replica) ended, unix seconds."""
        return self.prefix + "last-sweep"

    @property
    def sweep_lock(self) -> str:
        return self.prefix + "sweep-lock"

    def probe(self, token: str) -> str:
        return f"{self.prefix}probe:{token}"

    def heartbeat(self, member: str) -> str:
        """A running consumer's heartbeat (member: `host:pid`), renewed with a TTL."""
        return f"{self.prefix}heartbeat:{member}"

    @property
    def heartbeats(self) -> str:
        """Sorted set indexing the heartbeat keys (members `host:pid`), so none is SCANned for."""
        return self.prefix + "heartbeats"


@functools.cache
def _compile(pattern: str) -> re.Pattern[str]:
    body = re.escape(pattern)
    body = body.replace(re.escape("{conversation_id}"), "(?P<conversation_id>.+)")
    body = body.replace(re.escape("{timestamp}"), r"(?P<timestamp>[0-9]{1,11})")
    return re.compile(f"^{body}$", re.DOTALL)


@functools.lru_cache(maxsize=16384)  # claim parses each key, decoding again (a hold: a third time)
def _parse(pattern: str, key: str) -> KeyInfo | None:
    match = _compile(pattern).match(key)
    if match is None:
        return None
    written = datetime.fromtimestamp(int(match.group("timestamp")), tz=UTC)
    return KeyInfo(key, match.group("conversation_id"), written)


def colocatable(key: str) -> bool:
    """Whether our companion keys can share this key's cluster slot. Not for a key without a
    hash tag that contains '}': its slot hashes the whole key and no tag can hold a '}'."""
    return hash_tag(key) is not None or "}" not in key


def _wrap(key: str) -> str:
    """Embed a checkpoint key so the result hashes to its slot (if colocatable), reversibly."""
    return f"~{key}" if hash_tag(key) is not None else f"{{{key}}}"


def hash_tag(key: str) -> str | None:
    """Redis Cluster's hash tag of a key: the first non-empty {...}, if any."""
    start = key.find("{")
    if start < 0:
        return None
    end = key.find("}", start + 1)
    if end <= start + 1:
        return None
    return key[start + 1 : end]


def for_storage(key: str) -> str:
    """A key as PostgreSQL text can hold it: bytes that are not UTF-8 (kept as surrogates by
    our Redis clients) and NUL are backslash-escaped."""
    if key.isascii() and "\x00" not in key:
        return key
    text = key.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text.replace("\x00", "\\x00")


def keyevent_channel(db: int, event: str) -> str:
    return f"__keyevent@{db}__:{event}"


def layout_from(pattern: str, shadow_prefix: str) -> Layout:
    return Layout(pattern=pattern, shadow_prefix=shadow_prefix)

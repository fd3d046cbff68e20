"""Keyspace notifications: the flags we need, Redis's eviction policy, and the self-test."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
import structlog
from redis.exceptions import ResponseError

from consumer import metrics

log = structlog.get_logger("consumer.notifications")

# E: keyevent channels; x: expired; $: string writes (SET); g: generic (EXPIRE, PERSIST, ...).
NEEDED = "Ex$g"
_ALL = "g$lshzxetm"  # what 'A' stands for (Redis 7; 'm' and 'n' are not part of A)
EVICTING = ("allkeys-lru", "allkeys-lfu", "allkeys-random", "volatile-lru", "volatile-lfu",
            "volatile-random", "volatile-ttl")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Setup:
    """What we found and did: flags before and after, and whether CONFIG was permitted."""

    before: str | None
    after: str | None
    config_allowed: bool


def missing_flags(current: str, needed: str = NEEDED) -> str:
    have = set(current.replace("A", _ALL))
    return "".join(flag for flag in needed if flag not in have)


async def ensure_flags(client: aioredis.Redis, configure: bool, needed: str = NEEDED) -> Setup:
    """Add the flags we need to notify-keyspace-events, keeping the existing ones."""
    try:
        current = (await client.config_get("notify-keyspace-events")).get(
            "notify-keyspace-events", ""
        )
    except ResponseError as exc:
        log.warning("redis.config_refused", error=str(exc), detail="relying on the self-test")
        return Setup(None, None, config_allowed=False)
    current = _text(current)
    missing = missing_flags(current, needed)
    if not missing or not configure:
        return Setup(current, current, config_allowed=True)
    wanted = current + missing
    try:
        await client.config_set("notify-keyspace-events", wanted)
    except ResponseError as exc:
        log.warning("redis.config_refused", error=str(exc), detail="relying on the self-test")
        return Setup(current, current, config_allowed=False)
    log.info("redis.notifications_configured", before=current, after=wanted)
    return Setup(current, wanted, config_allowed=True)


async def check_eviction(client: aioredis.Redis) -> str | None:
    """Warn loudly when Redis may evict keys with a TTL: eviction emits no `expired` event."""
    try:
        reply = await client.config_get("maxmemory-policy")
    except ResponseError:
        metrics.EVICTION_RISK.set(-1)
        log.warning(
            "redis.eviction_unknown",
            detail="cannot read maxmemory-policy; make sure it is noeviction",
        )
        return None
    policy = _text(reply.get("maxmemory-policy", ""))
    risky = policy in EVICTING
    metrics.EVICTION_RISK.set(1 if risky else 0)
    if risky:
        log.error(
            "redis.eviction_risk", policy=policy,
            detail="evicted checkpoints are lost without an event; set maxmemory-policy noeviction",
        )  # fmt: skip
    return policy


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

"""Scaled-down windows and the environment of the archiver processes a scenario starts."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Windows:
    """The archiver's clock, scaled down (seconds); producers use the same ttl/archive_after."""

    ttl: float = 20.0
    archive_after: float = 10.0
    sweep_interval: float = 5.0
    max_hold: float = 60.0
    claim_ttl: float = 6.0
    sweep_lease: float = 10.0
    deadline_poll: float = 0.5
    db_retries: int = 2
    db_retry_delay: float = 0.5
    db_timeout: float = 2.0
    redis_timeout: float = 2.0
    batch_size: int = 200
    workers: int = 2

    @property
    def buffer(self) -> float:
        return self.ttl - self.archive_after

    def but(self, **changes: float | int) -> Windows:
        return replace(self, **changes)  # type: ignore[arg-type]

    def env(self) -> dict[str, str]:
        values: dict[str, float | int] = {
            "CHECKPOINT_TTL": self.ttl,
            "ARCHIVE_AFTER": self.archive_after,
            "SWEEP_INTERVAL": self.sweep_interval,
            "MAX_HOLD": self.max_hold,
            "CLAIM_TTL": self.claim_ttl,
            "SWEEP_LEASE": self.sweep_lease,
            "DEADLINE_POLL": self.deadline_poll,
            "DB_RETRIES": self.db_retries,
            "DB_RETRY_DELAY": self.db_retry_delay,
            "DB_TIMEOUT": self.db_timeout,
            "REDIS_TIMEOUT": self.redis_timeout,
            "BATCH_SIZE": self.batch_size,
            "WORKERS": self.workers,
        }
        return {f"ARCHIVER_{name}": str(value) for name, value in values.items()}

    def as_dict(self) -> dict[str, float | int]:
        return {name: getattr(self, name) for name in self.__slots__}


# Every scenario's archivers run with least privilege, as a deployment by the book does: the
# Redis user of ops/redis-acl.conf (notifications set in redis.conf, no CONFIG SET) and a
# PostgreSQL login role holding only archiver_writer. The harness itself connects as admin.
REDIS_PASSWORD = "archiver-faults-password"
NOTIFICATIONS = "notify-keyspace-events Ex$g"
SHUTDOWN_TIMEOUT_S = 5.0


def archiver_env(
    windows: Windows, redis_url: str, database_url: str, health_file: Path
) -> dict[str, str]:
    """Everything an `archiver` process needs besides the inherited environment."""
    return windows.env() | {
        "ARCHIVER_REDIS_URL": redis_url,
        "ARCHIVER_DATABASE_URL": database_url,
        "ARCHIVER_HEALTH_FILE": str(health_file),
        "ARCHIVER_LOG_FORMAT": "json",
        "ARCHIVER_LOG_LEVEL": "info",
        "ARCHIVER_HTTP_PORT": "0",
        "ARCHIVER_REPORT_INTERVAL": "5s",
        "ARCHIVER_PING_INTERVAL": "1s",
        "ARCHIVER_SELFTEST_TIMEOUT": "2s",
        "ARCHIVER_BATCH_WAIT": "0.02s",
        "ARCHIVER_CONFIGURE_NOTIFICATIONS": "false",
        "ARCHIVER_SHUTDOWN_TIMEOUT": f"{SHUTDOWN_TIMEOUT_S}s",
    }

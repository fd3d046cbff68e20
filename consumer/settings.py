"""Every option of the archiver: an environment variable ARCHIVER_<NAME> and a CLI flag."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from consumer import exceptions, urls

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(value: Any) -> float:
    """'24h', '90m', '30s', '250ms', '1d' or a number of seconds, as seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 15m, 23h, 1d)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def format_duration(seconds: float) -> str:
    """The largest whole unit; days from two on (24h reads better next to 23h than 1d)."""
    for unit in ("d", "h", "m", "s"):
        smallest = 2 * _UNITS[unit] if unit == "d" else _UNITS[unit]
        if seconds >= smallest and seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{seconds!r}s"


Duration = Annotated[float, BeforeValidator(parse_duration)]
OFF = frozenset({"off", "never", "none", ""})

RUN = ("run",)
SWEEP = ("run", "sweep")
BROWSE = ("history", "conversations", "dead-letters")
LIFECYCLE = ("retention", "jobs", "partitions", "cold")
ERASE = ("erase", "erasures")
DB = ("run", "sweep", "migrate", "status", "health", *BROWSE, *LIFECYCLE, "api", "api-keys", *ERASE)
DECODE = ("run", "sweep", "dead-letters", "erase")
KEYS = (*DECODE, "status", "health")
REDIS = ("run", "sweep", "status", "health", "erase")
ALL = ("run", "sweep", "migrate", "status", "check", *BROWSE)
LOGS = (*ALL, "health", *LIFECYCLE, "api", "api-keys", *ERASE)
JOBS = ("run", "retention", "jobs")
API = ("api",)
COLD = ("run", "retention", "jobs", "cold")
ERASURE_JOB = ("run", "jobs")


def _opt(default: Any, help: str, commands: tuple[str, ...] = SWEEP, **limits: Any) -> Any:
    return Field(
        default, description=help, json_schema_extra={"commands": list(commands)}, **limits
    )


class Settings(BaseSettings):
    """The archiver's configuration; see `archiver COMMAND --help` for each option."""

    model_config = SettingsConfigDict(env_prefix="ARCHIVER_", frozen=True, extra="forbid")

    redis_url: urls.RedisUrl = _opt(
        "redis://localhost:6379/0", "Redis holding the checkpoints.", REDIS
    )
    database_url: urls.DatabaseUrl = _opt(
        "postgresql://postgres@localhost:5432/archiver", "PostgreSQL archive.", DB
    )
    key_pattern: str = _opt(
        "langgraph:checkpoint:{conversation_id}:{timestamp}",
        "Checkpoint key layout; {timestamp} (unix seconds) must be the last segment.",
        KEYS,
    )
    shadow_prefix: str = _opt(
        "archiver:shadow:", "Prefix of shadow keys (and other own keys).", KEYS
    )
    checkpoint_ttl: Duration = _opt(86400.0, "TTL agents give checkpoints.", gt=0)
    archive_after: Duration = _opt(
        82800.0, "Archive this long after a checkpoint is written.", gt=0
    )
    sweep_interval: Duration = _opt(3600.0, "Time between sweeps.", gt=0)
    max_hold: Duration = _opt(21600.0, "Longest a due checkpoint is kept alive past its TTL.", ge=0)
    db_retries: int = _opt(2, "Attempts per batch against PostgreSQL.", ge=1)
    db_retry_delay: Duration = _opt(5.0, "Delay between PostgreSQL attempts.", ge=0)
    db_timeout: Duration = _opt(30.0, "Timeout of one PostgreSQL command.", gt=0)
    redis_timeout: Duration = _opt(10.0, "Timeout of one Redis command.", gt=0)
    batch_size: int = _opt(500, "Checkpoints archived per batch at most.", ge=1)
    batch_bytes: int = _opt(
        16 * 1024 * 1024,
        "Bytes of checkpoint values read per batch at most (a larger value is archived alone).",
        ge=1,
    )
    batch_wait: Duration = _opt(0.02, "Longest wait to fill a batch.", ge=0)
    workers: int = _opt(8, "Concurrent archive batches.", ge=1)
    queue_size: int = _opt(20000, "Pending archive hints held in memory.", RUN, ge=1)
    deadline_poll: Duration = _opt(0.1, "How often the deadline index is checked.", RUN, gt=0)
    claim_ttl: Duration = _opt(120.0, "Lease on a checkpoint being archived.", gt=0)
    sweep_lease: Duration = _opt(60.0, "Lease of the sweep lock across replicas.", gt=0)
    scan_count: int = _opt(300, "COUNT hint per SCAN call (one classify script per page).", ge=1)
    ping_interval: Duration = _opt(5.0, "Pub/sub liveness ping interval.", RUN, gt=0)
    selftest_timeout: Duration = _opt(5.0, "Wait for the notification self-test event.", RUN, gt=0)
    configure_notifications: bool = _opt(
        True, "Add the keyspace-notification flags we need with CONFIG SET.", RUN
    )
    timezone: str = _opt("UTC", "Zone of naive message timestamps.", DECODE)
    default_tenant: str = _opt("default", "Tenant of checkpoints that name none.", DECODE)
    allow_pickle: bool = _opt(
        False, "Admit pickle payloads through a restricted unpickler.", DECODE
    )
    max_payload: int = _opt(64 * 1024 * 1024, "Largest checkpoint payload in bytes.", DECODE, ge=1)
    http_host: str = _opt(
        "127.0.0.1", "Address of the health/metrics server (containers: 0.0.0.0).", RUN
    )
    http_port: int = _opt(9108, "Port of the health/metrics server (0: off).", RUN, ge=0, le=65535)
    http_timeout: Duration = _opt(
        10.0, "Close an HTTP connection that sends no complete request for this long.", RUN, gt=0
    )
    shutdown_timeout: Duration = _opt(
        15.0, "After SIGTERM/SIGINT, exit within this long whatever is stuck.", RUN, gt=0
    )
    health_file: Path = _opt(
        Path("/tmp/archiver-health.json"), "Health file, written atomically.", ALL
    )
    report_interval: Duration = _opt(
        60.0, "How often `run` records a row in archive_runs.", RUN, gt=0
    )
    log_level: Literal["debug", "info", "warning", "error"] = _opt("info", "Log level.", LOGS)
    log_format: Literal["auto", "json", "console"] = _opt(
        "auto", "JSON lines, or readable on a terminal (auto).", LOGS
    )
    log_buffer: int = _opt(
        4 * 1024 * 1024,
        "Bytes of log lines held while the reader of stderr lags; beyond, lines are dropped.",
        LOGS,
        ge=4096,
    )
    # --- periodic jobs, retention and partitions (consumer/jobs.py, retention.py, partitions.py)
    run_jobs: bool = _opt(
        True, "Host the periodic jobs (partitions, retention, cold, erasure) in `run`.", RUN
    )
    job_lease: Duration = _opt(
        60.0, "Lease of a running job across replicas; renewed every third of it.", JOBS, ge=3
    )
    job_timeout: Duration = _opt(
        600.0, "Timeout of one statement of a job (a batch, a month's census).", JOBS, gt=0
    )
    partitions_schedule: str = _opt(
        "5 * * * *", "When partition maintenance runs (cron, UTC; `off`: never).", JOBS
    )
    partitions_ahead: int = _opt(
        2, "Monthly partitions kept created ahead of the current month.", JOBS, ge=1, le=24
    )
    retention_schedule: str = _opt(
        "0 2 * * *", "When retention runs (cron, UTC; `off`: never).", JOBS
    )
    retention_batch: int = _opt(
        5000, "Rows per retention delete batch (one short transaction each).", JOBS, ge=1
    )
    retention_duty: int = _opt(
        50, "Percent of the time retention's batches may keep the database busy.", JOBS, ge=1,
        le=100,
    )  # fmt: skip
    owner_database_url: str | None = _opt(
        None,
        "PostgreSQL as the schema owner, used only for DETACH PARTITION CONCURRENTLY (unset: a"
        " plain DETACH under ARCHIVER_DETACH_LOCK_TIMEOUT, retried).",
        JOBS,
    )
    detach_lock_timeout: Duration = _opt(
        0.2, "Longest wait for a plain DETACH's lock (archiving queues behind it).", JOBS, gt=0
    )
    detach_attempts: int = _opt(
        5, "Plain DETACH attempts before a month is deleted in batches instead.", JOBS, ge=1
    )

    # --- the History API (consumer/api/, `archiver api`)
    api_host: str = _opt(
        "127.0.0.1", "Address the History API listens on (containers: 0.0.0.0).", API
    )
    api_port: int = _opt(8080, "Port of the History API.", API, ge=1, le=65535)
    api_database_url: urls.DatabaseUrl | None = _opt(
        None,
        "PostgreSQL as the API's own role (holds only archiver_api; unset: ARCHIVER_DATABASE_URL).",
        API,
    )
    api_pool_size: int = _opt(10, "PostgreSQL connections the API keeps at most.", API, ge=1)
    api_timeout: Duration = _opt(5.0, "Timeout of one PostgreSQL command of the API.", API, gt=0)
    api_idle_timeout: Duration = _opt(
        10.0, "Close an API connection that sends no complete request for this long.", API, ge=1
    )

    # --- the cold tier (consumer/cold/)
    cold_url: str | None = _opt(
        None,
        "Cold tier: file:///path or s3://bucket/prefix (unset: no cold tier; retention's"
        " `export` policies keep every row).",
        (*COLD, "erase"),
    )
    s3_endpoint_url: str | None = _opt(
        None,
        "S3-compatible server for an s3:// cold tier, e.g. http://minio:9000.",
        (*COLD, "erase"),
    )
    cold_schedule: str = _opt(
        "0 3 1 * *", "When the cold tier exports past months (cron, UTC; `off`: never).", COLD
    )
    cold_part_rows: int = _opt(
        5_000_000, "Rows per cold tier file at most (a larger month gets several).", COLD, ge=1
    )
    cold_group_bytes: int = _opt(
        32 * 1024 * 1024,
        "Bytes of rows held per Parquet row group while exporting (bounds its memory).",
        COLD,
        ge=1024 * 1024,
    )
    cold_format: Literal["parquet", "jsonl"] = _opt(
        "parquet",
        "Format of new cold tier files: parquet (zstd) or jsonl (JSON lines, one object per row).",
        COLD,
    )
    cold_compression: Literal["zstd", "gzip"] = _opt(
        "zstd", "Compression of jsonl cold tier files: zstd or gzip (Parquet is always zstd).", COLD
    )

    # --- sources (consumer/sources/)
    source: Literal["seed-json", "langgraph-redis"] = _opt(
        "seed-json",
        "Checkpoint format in Redis: seed-json (ARCHIVER_KEY_PATTERN) or langgraph-redis"
        " (langgraph-checkpoint-redis's savers).",
        KEYS,
    )
    thread_pattern: str | None = _opt(
        None,
        "langgraph-redis: regex over the thread id with named groups tenant_id, user_id,"
        " customer_id, conversation_id (unset: the thread id is the conversation).",
        DECODE,
    )
    state_fields: str | None = _opt(
        None,
        "langgraph-redis: state channels naming them, e.g. tenant_id=tenant,user_id=user.id.",
        DECODE,
    )
    delete_archived: bool = _opt(
        False,
        "langgraph-redis: delete a thread's keys, all of them, once its latest checkpoint is"
        " archived and still the latest (compare-and-delete) instead of leaving them to their TTL.",
    )

    @field_validator("cold_url")
    @classmethod
    def _cold_url(cls, value: str | None) -> str | None:
        return None if value is None or not value.strip() else urls.check_cold_url(value.strip())

    # --- erasure (consumer/fences.py, consumer/erasure/) ---
    erasure_key: SecretStr | None = _opt(
        None,
        "Secret of the keyed hash (HMAC-SHA256) that names erased subjects; at least 16"
        " characters. Required to erase; the archiver needs it once any erasure exists. Give it"
        " in the environment, not as a flag (a command line is visible to every local user).",
        (*DECODE, "jobs", "api"),
        min_length=16,
    )
    erasure_schedule: str = _opt(
        "*/10 * * * *", "When unfinished erasures are resumed (cron, UTC; `off`: never).",
        ERASURE_JOB,
    )  # fmt: skip
    erasure_batch: int = _opt(
        5000,
        "Rows per erasure delete batch (one short transaction each).",
        (*ERASURE_JOB, "erase"),
        ge=1,
    )

    erasure_redis_url: urls.RedisUrl | None = _opt(
        None,
        "Redis URL of the erasure's Redis step (unset: ARCHIVER_REDIS_URL). langgraph-redis: a"
        " user that may delete a thread's keys (archiver-erasure-langgraph, ops/redis-acl.conf).",
        (*ERASURE_JOB, "erase"),
    )

    @property
    def erasure_redis(self) -> str:
        """The Redis URL the erasure's Redis step connects to."""
        return self.erasure_redis_url or self.redis_url

    @property
    def erasure_secret(self) -> bytes | None:
        """ARCHIVER_ERASURE_KEY as bytes (None: unset)."""
        if self.erasure_key is None:
            return None
        return self.erasure_key.get_secret_value().encode("utf-8")

    @field_validator(
        "partitions_schedule", "retention_schedule", "cold_schedule", "erasure_schedule"
    )
    @classmethod
    def _cron(cls, value: str) -> str:
        if value.strip().lower() in OFF or croniter.is_valid(value):
            return value.strip()
        raise ValueError(f"not a cron expression: {value!r} (e.g. '0 2 * * *', or 'off')")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @model_validator(mode="after")
    def _check_windows(self) -> Settings:
        for problem in window_problems(self):
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _check_cold_format(self) -> Settings:
        if self.cold_format == "parquet" and self.cold_compression != "zstd":
            raise ValueError(
                "ARCHIVER_COLD_COMPRESSION=gzip is for ARCHIVER_COLD_FORMAT=jsonl"
                " (Parquet files are zstd)"
            )
        return self

    @property
    def buffer(self) -> float:
        """Time between the shadow firing and the checkpoint expiring."""
        return self.checkpoint_ttl - self.archive_after

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def window_problems(s: Settings) -> list[str]:
    """Reasons this configuration could let a checkpoint expire unarchived, if any."""
    ttl, after, interval = (
        format_duration(x) for x in (s.checkpoint_ttl, s.archive_after, s.sweep_interval)
    )
    problems = []
    if s.buffer <= 0:
        problems.append(
            f"ARCHIVER_ARCHIVE_AFTER ({after}) must be shorter than ARCHIVER_CHECKPOINT_TTL ({ttl}):"
            " the shadow has to fire before the checkpoint expires"
        )
    elif s.sweep_interval > s.buffer:
        problems.append(
            f"ARCHIVER_SWEEP_INTERVAL ({interval}) must not exceed the buffer TTL - ARCHIVE_AFTER"
            f" ({format_duration(s.buffer)}): with events lost, a checkpoint could expire"
            " unarchived if one sweep is missed"
        )
    elif s.sweep_interval > s.archive_after:
        problems.append(
            f"ARCHIVER_SWEEP_INTERVAL ({interval}) must not exceed ARCHIVER_ARCHIVE_AFTER ({after}):"
            " the sweeper would archive checkpoints agents are still using"
        )
    if s.buffer > 0 and s.deadline_poll * 3 > s.buffer:
        problems.append("ARCHIVER_DEADLINE_POLL must be at most a third of the buffer")
    return problems


def load(**overrides: Any) -> Settings:
    """Settings from the environment, overridden by explicit values; ConfigError if invalid."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise exceptions.ConfigError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        name = f"ARCHIVER_{where.upper()}: " if where else ""
        lines.append(f"{name}{err['msg'].removeprefix('Value error, ')}")
    return "invalid configuration: " + "; ".join(lines)

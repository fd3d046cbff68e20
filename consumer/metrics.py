"""Prometheus metrics, served on /metrics by `archiver run`."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ARCHIVED = Counter(
    "archiver_checkpoints_archived",
    "Checkpoint values committed to PostgreSQL (then deleted from Redis unless rewritten meanwhile).",
)
MESSAGES = Counter("archiver_messages_archived", "Messages newly inserted into PostgreSQL.")
DEAD_LETTERS = Counter("archiver_dead_letters", "Checkpoints moved to archive_dead_letters.")
OVERSIZED = Counter(
    "archiver_oversized_dead_letters",
    "Checkpoints over ARCHIVER_MAX_PAYLOAD, dead-lettered with only their first bytes kept.",
)
ERRORS = Counter("archiver_errors", "Failures, by stage.", ["stage"])
EVENTS = Counter("archiver_events_received", "Keyspace events received, by kind.", ["event"])
HINTS_DROPPED = Counter(
    "archiver_hints_dropped", "Archive hints dropped because the queue was full."
)
SHADOWS_ARMED = Counter(
    "archiver_shadows_armed", "Shadows created or refreshed, by source.", ["source"]
)
SWEEPS = Counter("archiver_sweeps", "Sweeps run, by result.", ["result"])
LATENCY = Histogram(
    "archiver_archive_latency_seconds",
    "From trigger received to PostgreSQL commit, per checkpoint.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
BATCH_SIZE = Histogram(
    "archiver_batch_size",
    "Checkpoints claimed per archive batch.",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500),
)
BACKLOG = Gauge("archiver_backlog", "Archive hints queued in this process.")
DUE = Gauge("archiver_deadlines_due", "Deadline-index entries due and not yet archived.")
SWEEP_DURATION = Gauge("archiver_last_sweep_duration_seconds", "Duration of the last sweep.")
LAST_SWEEP_OK = Gauge(
    "archiver_last_successful_sweep_timestamp_seconds", "When the last sweep without errors ended."
)
SUBSCRIBED = Gauge("archiver_subscription_up", "1 while the keyevent subscription is healthy.")
DEGRADED = Gauge(
    "archiver_degraded", "1 when keyspace notifications are unavailable (sweeper-only mode)."
)
EVICTION_RISK = Gauge(
    "archiver_eviction_risk",
    "1 when Redis maxmemory-policy may evict keys that carry a TTL, -1 when it cannot be read.",
)
LOG_LINES_DROPPED = Counter(
    "archiver_log_lines_dropped",
    "Log lines dropped because the reader of stderr lagged (never waited for).",
)
HOLD_EXHAUSTED = Counter(
    "archiver_checkpoints_hold_exhausted",
    "Due checkpoints whose hold reached ARCHIVER_MAX_HOLD: they expire unarchived.",
)

# Periodic jobs (consumer/jobs.py). The label is `job_name`, not `job`: Prometheus gives every
# scraped series the target label `job` (our alerts select job="archiver"), and a metric label
# of that name would be renamed `exported_job` on scrape, or, with honor_labels, replace it.
JOB_RUNS = Counter(
    "archiver_job_runs",
    "Periodic job runs finished by this process, by status.",
    ["job_name", "status"],
)
JOB_DURATION = Histogram(
    "archiver_job_duration_seconds",
    "Duration of the periodic job runs this process finished.",
    ["job_name"],
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400),
)
JOB_LAST_SUCCESS = Gauge(
    "archiver_job_last_success_timestamp_seconds",
    "When the job's last successful run ended (any replica, from job_runs).",
    ["job_name"],
)
JOB_FAILING = Gauge(
    "archiver_job_failing",
    "1 while the job's latest finished run (any replica) failed or was interrupted.",
    ["job_name"],
)
JOB_NEXT_RUN = Gauge(
    "archiver_job_next_run_timestamp_seconds",
    "When the job is due next; a time in the past means it is overdue.",
    ["job_name"],
)

# Create the known label values up front so that the first increment shows in rate()/increase().
for _stage in ("claim", "database", "batch", "deadlines", "sweep"):
    ERRORS.labels(stage=_stage)
for _result in ("ok", "errors", "failed"):
    SWEEPS.labels(result=_result)
for _event in ("expired", "set", "expire"):
    EVENTS.labels(event=_event)
for _source in ("event", "sweep"):
    SHADOWS_ARMED.labels(source=_source)
# --- erasure (consumer/fences.py, consumer/erasure/) ---
ERASED = Counter(
    "archiver_messages_erased",
    "Messages of erased subjects the archive path refused (stamped at or before the erasure).",
)
ERASURES = Counter("archiver_erasures", "Erasure steps completed, by step.", ["step"])

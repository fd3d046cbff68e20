"""What to run and how big: command-line flags, with a full and a `--quick` preset."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

SCENARIOS = (
    "throughput", "naive", "latency", "sweep", "memory", "retention", "cold", "api", "erasure",
    "langgraph",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Config:
    """Sizes and switches of one benchmark run."""

    json_path: Path = Path("bench-results.json")
    quick: bool = False
    only: tuple[str, ...] = SCENARIOS
    messages: int = 10
    content_chars: int = 200
    throughput_n: int = 50_000
    langgraph_threads: int = 5_000
    floor_batch: int = 500
    floor_connections: int = 2
    naive_n: int = 5_000
    latency_rate: int = 1_000
    latency_seconds: float = 60.0
    latency_lead_s: float = 3.0
    background: int = 1_000_000
    sweep_keys: int = 1_000_000
    memory_n: int = 200_000
    memory_spread_s: float = 3.0
    memory_buffer_s: float = 180.0
    retention_rows: int = 10_000_000
    retention_rate: int = 1_000
    retention_baseline_s: float = 30.0
    cold_rows: int = 10_000_000
    cold_format: str = "parquet"
    retention_detach: str = "locked"
    api_rows: int = 10_000_000
    api_rate: int = 200
    api_seconds: float = 30.0
    erasure_rows: int = 10_000_000
    erasure_live: int = 1_000_000
    erasure_rate: int = 1_000
    erasure_baseline_s: float = 30.0
    pg_fsync: bool = True
    profile: Path | None = None
    workdir: Path | None = None
    keep: bool = False


QUICK = {
    "throughput_n": 2_000,
    "langgraph_threads": 200,
    "naive_n": 300,
    "latency_rate": 200,
    "latency_seconds": 10.0,
    "background": 20_000,
    "sweep_keys": 20_000,
    "memory_n": 5_000,
    "memory_buffer_s": 30.0,
    "retention_rows": 200_000,
    "retention_rate": 200,
    "retention_baseline_s": 5.0,
    "cold_rows": 200_000,
    "api_rows": 100_000,
    "api_seconds": 5.0,
    "erasure_rows": 200_000,
    "erasure_live": 20_000,
    "erasure_rate": 200,
    "erasure_baseline_s": 5.0,
}

_HELP = {
    "messages": "messages per checkpoint",
    "content_chars": "characters per message content (about)",
    "throughput_n": "throughput: due checkpoints archived by `archiver run`",
    "langgraph_threads": "langgraph: threads of MESSAGES checkpoints (one message more each)",
    "floor_batch": "floor: checkpoints per COPY + INSERT transaction (as ARCHIVER_BATCH_SIZE)",
    "floor_connections": "floor: concurrent connections (as ARCHIVER_WORKERS)",
    "naive_n": "naive: checkpoints archived the seed's way (a subset of the throughput data)",
    "latency_rate": "latency: checkpoints coming due per second",
    "latency_seconds": "latency: how long checkpoints keep coming due",
    "latency_lead_s": "latency: how long before its due moment a checkpoint is written",
    "background": "latency: live checkpoints (+ shadows, long TTLs) sitting in Redis",
    "sweep_keys": "sweep: checkpoint keys (+ shadows), none due",
    "memory_n": "memory: shadows expiring in a burst",
    "memory_spread_s": "memory: the burst's length in seconds",
    "memory_buffer_s": "memory: time from shadow expiry to checkpoint expiry (the buffer)",
    "retention_rows": "retention: rows of history over 12 months and 5 tenants",
    "retention_rate": "retention: checkpoints coming due per second meanwhile",
    "retention_baseline_s": "retention: seconds of archiving measured before any delete",
    "cold_rows": "cold: rows of one tenant over two months; the last month is exported",
    "api_rows": "api: messages of history (100 per conversation, 3 tenants)",
    "api_rate": "api: requests per second sent (open loop)",
    "api_seconds": "api: seconds of load, paced and then as fast as it goes",
    "erasure_rows": "erasure: rows of history over 3 months and 5 tenants",
    "erasure_live": "erasure: live checkpoints in Redis (none due), the customer's besides",
    "erasure_rate": "erasure: checkpoints coming due per second meanwhile",
    "erasure_baseline_s": "erasure: seconds of archiving measured before the erasure",
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ops.bench",
        description="Benchmark the archiver on private Redis and PostgreSQL servers.",
    )
    p.add_argument("--json", dest="json_path", type=Path, default=Path("bench-results.json"),
                   help="where to write the results (default: %(default)s)")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="small sizes everywhere (~1 minute)")
    p.add_argument("--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS),
                   metavar="SCENARIO", help=f"scenarios to run, of {', '.join(SCENARIOS)}")  # fmt: skip
    defaults = {f.name: f.default for f in fields(Config)}
    for name, text in _HELP.items():
        kind = float if isinstance(defaults[name], float) else int
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None,
                       help=f"{text} (default {defaults[name]}, quick {QUICK.get(name, '=')})")  # fmt: skip
    p.add_argument("--cold-format", choices=["parquet", "jsonl.zst", "jsonl.gz"], default=None,
                   help="cold: the files' format, as ARCHIVER_COLD_FORMAT and"
                        " ARCHIVER_COLD_COMPRESSION name it (default parquet)")  # fmt: skip
    p.add_argument("--retention-detach", choices=["locked", "concurrently"], default=None,
                   help="retention: how partitions are detached: a plain DETACH under a lock"
                        " timeout, or CONCURRENTLY over the owner's connection"
                        " (ARCHIVER_OWNER_DATABASE_URL; default locked)")  # fmt: skip
    p.add_argument("--no-pg-fsync", dest="pg_fsync", action="store_false",
                   help="PostgreSQL with fsync=off like the tests (default: fsync on)")  # fmt: skip
    p.add_argument("--profile", type=Path, default=None,
                   help="py-spy the archiver during `throughput`; write profiles to this folder")  # fmt: skip
    p.add_argument(
        "--workdir", type=Path, default=None, help="logs and server files (default: temp)"
    )
    p.add_argument("--keep", action="store_true", help="keep the work directory afterwards")
    return p


def parse(argv: list[str] | None = None) -> Config:
    args = vars(parser().parse_args(argv))
    preset = QUICK if args["quick"] else {}
    values: dict[str, Any] = {}
    for f in fields(Config):
        given = args.get(f.name)
        values[f.name] = given if given is not None else preset.get(f.name, f.default)
    values["only"] = tuple(s for s in SCENARIOS if s in args["only"])
    return Config(**values)

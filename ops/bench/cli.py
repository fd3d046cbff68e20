"""Run the benchmark: servers up, each scenario in turn, JSON + table, everything stopped."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import shutil
import signal
import subprocess
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

import consumer

from . import (
    api,
    cold,
    config,
    erasure,
    langgraph_source,
    latency,
    memory,
    naive,
    procs,
    report,
    retention,
    stack,
    sweep,
    throughput,
)
from .common import Context, Result, pg_connection, redis_client
from .workload import Generator

Runner = Callable[[Context], Awaitable[Result]]
# sweep before latency: both use the same background population, loaded once.
RUNNERS: dict[str, Runner] = {
    "throughput": throughput.run,
    "naive": naive.run,
    "sweep": sweep.run,
    "latency": latency.run,
    "memory": memory.run,
    "retention": retention.run,
    "api": api.run,
    "cold": cold.run,
    "erasure": erasure.run,
    "langgraph": langgraph_source.run,
}
BUDGET_S = 900
console = Console(stderr=True)


def main(argv: list[str] | None = None) -> int:
    cfg = config.parse(argv)
    results: dict[str, Any] = {"meta": _meta(cfg)}
    started = time.monotonic()
    code = 1
    try:
        with _workspace(cfg) as workdir, stack.started(workdir, cfg.pg_fsync) as servers:
            results["meta"]["workdir"] = str(workdir)
            try:
                code = asyncio.run(_run_all(cfg, servers, workdir, results))
            finally:
                procs.kill_all()
    except (KeyboardInterrupt, asyncio.CancelledError):
        results["meta"]["interrupted"] = True
        code = 130
    finally:
        _finish(cfg, results, started)
    return code


@contextlib.contextmanager
def _workspace(cfg: config.Config) -> Iterator[Path]:
    """The work folder (logs, server files); a temporary one is removed unless --keep."""
    if cfg.workdir is not None:
        cfg.workdir.mkdir(parents=True, exist_ok=True)
        yield cfg.workdir.resolve()
        return
    path = Path(tempfile.mkdtemp(prefix="archiver-bench-"))
    try:
        yield path
    finally:
        if cfg.keep:
            console.log(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


async def _run_all(
    cfg: config.Config, servers: stack.Stack, workdir: Path, results: dict[str, Any]
) -> int:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    ctx = Context(cfg, servers, workdir, Generator(cfg.messages, cfg.content_chars))
    results["meta"]["versions"] |= await _server_versions(servers)
    failed = 0
    for name, runner in RUNNERS.items():
        if name in cfg.only:
            results[name] = await _run_one(name, runner, ctx)
            failed += "error" in results[name]
    return 1 if failed else 0


async def _run_one(name: str, runner: Runner, ctx: Context) -> Result:
    console.log(f"[bold]{name}[/bold]: running")
    started = time.monotonic()
    commit = _git_commit()  # the archiver's code may change between scenarios of a run
    try:
        result = await runner(ctx)
    except Exception as exc:  # one failed scenario must not stop the others
        result = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        (ctx.folder(name) / "error.txt").write_text(traceback.format_exc())
        console.log(f"{name}: [red]{result['error']}[/red]")
    result["scenario_s"] = round(time.monotonic() - started, 1)
    result["git"] = commit
    result["loadavg_after"] = _loadavg()
    console.log(f"{name}: done in {result['scenario_s']:.0f}s")
    return result


async def _server_versions(servers: stack.Stack) -> dict[str, str]:
    async with redis_client(servers.redis_url) as client:
        info = await client.info("server")
    async with pg_connection(servers.pg.dsn()) as conn:
        pg = await conn.fetchval("SHOW server_version")
    return {"redis": str(info.get("redis_version")), "postgresql": str(pg)}


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, check=False)
    return done.stdout.strip()


def _git_commit() -> str | None:
    """HEAD, marked `+dirty` when the archiver's code or SQL differs from it."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--", "consumer", "sql")
        return (head + ("+dirty" if dirty else "")) or None
    return None


def _meta(cfg: config.Config) -> dict[str, Any]:
    sizes = {k: str(v) if isinstance(v, Path | tuple) else v for k, v in asdict(cfg).items()}
    return {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "loadavg_at_start": _loadavg(),
        "quick": cfg.quick,
        "config": sizes,
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gb": _memory_gb(),
            "platform": platform.platform(),
        },
        "versions": {
            "archiver": consumer.__version__,
            "python": platform.python_version(),
            "git": _git_commit(),
        },
        "notes": [
            "archived_at is PostgreSQL now(): the start of the archiving transaction, a lower"
            " bound of the commit; latency.due_to_deleted_ms (the checkpoint's DEL event, sent"
            " after the commit) is the upper bound.",
            "PostgreSQL runs with fsync=on unless --no-pg-fsync; Redis without persistence.",
        ],
    }


def _loadavg() -> str | None:
    """The machine's load (shared: other work may run beside the benchmark)."""
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return None


def _memory_gb() -> float | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return None


def _finish(cfg: config.Config, results: dict[str, Any], started: float) -> None:
    targets = report.judge(results, tuple(s for s in cfg.only if s in results))
    judged = [t for t in targets if t["pass"] is not None]
    results["targets"] = targets
    results["meta"] |= {
        "total_s": round(time.monotonic() - started, 1),
        "within_budget": time.monotonic() - started <= BUDGET_S,
        "targets_judged": len(judged),
        "targets_passed": sum(1 for t in judged if t["pass"]),
    }
    report.write_json(cfg.json_path, results)
    report.render(results, Console())
    console.log(f"results written to {cfg.json_path}")

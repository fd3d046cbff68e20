"""`archiver demo` as a person runs it: a subprocess off a terminal (plain progress lines),
its own servers, a "nothing lost" line that direct SQL counts confirm, nothing left running."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from tests import servers, terminals

SMALL = ["--conversations", "30", "--spread", "3s", "--checkpoints", "4"]
FAST_CLOCK = ["--ttl", "12s", "--archive-after", "8s"]
VERDICT = re.compile(
    r"^nothing lost: (\d+)/(\d+) expected messages in conversation_history \(0 duplicates\),"
    r" (\d+)/(\d+) malformed checkpoints in archive_dead_letters, Redis keys left: 0$",
    re.MULTILINE,
)
EXPORT = re.compile(r"^export (ARCHIVER_\w+)=(\S+)$", re.MULTILINE)
STARTED = re.compile(r"^started (redis-server|postgres) \(pid (\d+)\) at (\S+)$", re.MULTILINE)


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A folder PostgreSQL's user can enter (pytest's tmp_path sits below a 0700 one), so
    the cluster lives in .archiver/ as it does for a user."""
    path = Path(tempfile.mkdtemp(prefix="archiver-demo-test-"))
    path.chmod(0o755)
    yield path
    if (path / ".archiver").exists():
        demo(path, "--clean")
    shutil.rmtree(path, ignore_errors=True)


def demo(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m consumer demo ARGS` in `cwd`, with no ARCHIVER_* settings but test paths."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVER_") or "_TEST_" in k}
    return subprocess.run(
        [sys.executable, "-m", "consumer", "demo", *args],
        cwd=cwd, env=clean | (env or {}), capture_output=True, text=True, timeout=100,
        check=False,
    )  # fmt: skip


def archiver(cwd: Path, exports: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Another command run with the `export` lines the demo printed, as a person pastes them."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVER_")}
    return subprocess.run(
        [sys.executable, "-m", "consumer", *args], cwd=cwd, env=clean | exports,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def started(stdout: str) -> dict[str, tuple[int, str]]:
    return {name: (int(pid), url) for name, pid, url in STARTED.findall(stdout)}


def assert_gone(pids: list[int]) -> None:
    """Neither the servers nor any process of their sessions (PostgreSQL's backends) remain."""
    for pid in pids:
        assert not servers.pid_alive(pid), f"server pid {pid} still runs"
        assert servers.session_members(pid) == [], f"processes of server pid {pid} remain"


async def sql_counts(database_url: str) -> tuple[int, int]:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        rows = await conn.fetchval("SELECT count(*) FROM conversation_history")
        dead = await conn.fetchval("SELECT count(*) FROM archive_dead_letters")
    finally:
        await conn.close()
    return int(rows), int(dead)


async def checkpoint_keys(redis_url: str) -> list[bytes]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        return [k async for k in client.scan_iter(match="langgraph:checkpoint:*")]
    finally:
        await client.aclose()


async def test_demo_archives_everything_then_keeps_servers_until_clean(workdir: Path) -> None:
    result = demo(workdir, *SMALL, *FAST_CLOCK, "--keep")
    assert result.returncode == 0, result.stdout + result.stderr
    verdict = VERDICT.search(result.stdout)
    assert verdict, result.stdout
    found, expected, dead, malformed = (int(g) for g in verdict.groups())
    assert found == expected > 0
    assert dead == malformed > 0
    assert re.search(r"^\[\s*\d+\.\ds\] written \d+/\d+ alive", result.stdout, re.MULTILINE)
    assert "read back from PostgreSQL" in result.stdout
    assert "archiver demo --stop" in result.stdout

    kept = started(result.stdout)
    assert set(kept) == {"redis-server", "postgres"}
    exports = dict(EXPORT.findall(result.stdout))
    assert exports == {
        "ARCHIVER_REDIS_URL": kept["redis-server"][1],
        "ARCHIVER_DATABASE_URL": kept["postgres"][1],
        "ARCHIVER_HEALTH_FILE": str((workdir / ".archiver" / "health.json").resolve()),
    }
    listed = archiver(workdir, exports, "conversations", "--json", "--limit", "500")
    assert listed.returncode == 0, listed.stderr
    assert len(orjson.loads(listed.stdout)["items"]) == 30
    assert (workdir / ".archiver" / "postgres" / "cluster" / "data" / "PG_VERSION").is_file()
    assert await sql_counts(kept["postgres"][1]) == (expected, malformed)
    assert await checkpoint_keys(kept["redis-server"][1]) == []

    cleaned = demo(workdir, "--clean")
    assert cleaned.returncode == 0, cleaned.stderr
    assert "stopped postgres" in cleaned.stdout
    assert "stopped redis-server" in cleaned.stdout
    assert not (workdir / ".archiver").exists()
    assert_gone([pid for pid, _ in kept.values()])


def test_demo_stops_everything_it_started(workdir: Path) -> None:
    args = ["--conversations", "5", "--spread", "1s", "--checkpoints", "2"]
    result = demo(workdir, *args, "--ttl", "6s", "--archive-after", "4s")
    assert result.returncode == 0, result.stdout + result.stderr
    assert VERDICT.search(result.stdout), result.stdout
    pids = [pid for pid, _ in started(result.stdout).values()]
    assert len(pids) == 2
    assert_gone(pids)
    assert not (workdir / ".archiver" / "servers.json").exists()
    assert (workdir / ".archiver" / "demo.log").stat().st_size > 0  # logs went to the file
    assert "checkpoint.archived" not in result.stdout + result.stderr


LANGGRAPH_VERDICT = re.compile(
    r"^nothing lost: (\d+)/(\d+) expected messages in conversation_history \(0 duplicates\),"
    r" Redis keys left: 0$",
    re.MULTILINE,
)


def test_the_langgraph_demo_archives_every_message_of_a_real_graph_once(workdir: Path) -> None:
    args = ["--source", "langgraph-redis", "--conversations", "3"]
    result = demo(workdir, *args, "--ttl", "6s", "--archive-after", "4s")
    assert result.returncode == 0, result.stdout + result.stderr
    verdict = LANGGRAPH_VERDICT.search(result.stdout)
    assert verdict, result.stdout
    found, expected = (int(g) for g in verdict.groups())
    assert found == expected == 3 * 2 * 4  # 2 turns: question, tool call, tool answer, reply
    assert "read back from PostgreSQL" in result.stdout
    assert re.search(r"^  tool\s+checkpoint step", result.stdout, re.MULTILINE)
    kept = started(result.stdout)
    assert set(kept) == {"redis-server", "postgres"}
    assert_gone([pid for pid, _ in kept.values()])


def test_clean_refuses_a_folder_that_is_not_the_demos(tmp_path: Path) -> None:
    foreign = tmp_path / "precious"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    result = demo(tmp_path, "--clean", "--data-dir", str(foreign))
    assert result.returncode == 2
    assert "not a demo data folder" in result.stderr
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_clean_and_stop_without_a_data_folder_do_nothing(tmp_path: Path) -> None:
    for flag in ("--stop", "--clean"):
        result = demo(tmp_path, flag)
        assert result.returncode == 0, result.stderr
        assert "no demo server was running" in result.stdout
    assert not (tmp_path / ".archiver").exists()


def test_missing_server_binaries_name_what_to_install(tmp_path: Path) -> None:
    result = demo(tmp_path, env={"ARCHIVER_TEST_REDIS_SERVER": str(tmp_path / "none")})
    assert result.returncode == 2
    assert "apt-get install redis-server postgresql" in result.stderr
    assert "ARCHIVER_REDIS_URL" in result.stderr


def test_a_day_long_ttl_is_refused(tmp_path: Path) -> None:
    result = demo(tmp_path, env={"ARCHIVER_CHECKPOINT_TTL": "1d"})
    assert result.returncode == 2
    assert "--ttl" in result.stderr
    assert not (tmp_path / ".archiver").exists()


def test_the_live_view_fits_an_80_column_terminal(workdir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVER_") or "_TEST_" in k}
    env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    args = ["demo", "--conversations", "5", "--spread", "1s", "--checkpoints", "2"]
    ran = terminals.on_terminal(
        env | {"TERM": "xterm-256color"}, 80, *args, "--ttl", "6s", "--archive-after", "4s",
        cwd=workdir, timeout=100,
    )  # fmt: skip
    assert ran.code == 0, ran.stdout + ran.stderr
    screen = terminals.SGR.sub("", ran.stdout)  # styles, then cursor moves between frames
    screen = terminals.CSI.sub("\n", screen).replace("\r", "\n")
    assert "\x1b" not in screen
    lines = screen.splitlines()
    assert any(line.startswith("╭") and " archiver demo " in line for line in lines)
    assert all(len(line) <= 80 for line in lines if line.startswith(("╭", "│", "╰")))
    assert "nothing lost" in screen

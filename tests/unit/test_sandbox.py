"""The demo's data folder: marked, emptied between runs, never a foreign folder, and never
started twice over servers kept by --keep."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import orjson
import pytest

from consumer.demo import sandbox


def record(folder: Path, pid: int, marker: str, temporary: list[Path] | None = None) -> None:
    server = {"name": "redis-server", "pid": pid, "port": 1, "url": "redis://x", "marker": marker,
              "signal": 15}  # fmt: skip
    state = {"servers": [server], "temporary": [str(p) for p in temporary or []]}
    (folder / sandbox.STATE).write_bytes(orjson.dumps(state))


def test_prepare_marks_a_new_folder(tmp_path: Path) -> None:
    folder = tmp_path / "a" / ".archiver"
    sandbox.prepare(folder)
    assert (folder / sandbox.MARKER).is_file()


def test_prepare_empties_an_earlier_run_but_nothing_else(tmp_path: Path) -> None:
    folder = tmp_path / ".archiver"
    sandbox.prepare(folder)
    (folder / "redis").mkdir()
    (folder / "demo.log").write_text("old")
    (folder / "mine.txt").write_text("kept")
    cluster = tmp_path / "archiver-pg-old"
    cluster.mkdir()
    record(folder, pid=2**22 + 1, marker="gone", temporary=[cluster])
    sandbox.prepare(folder)
    assert sorted(p.name for p in folder.iterdir()) == [sandbox.MARKER, "mine.txt"]
    assert not cluster.exists()


def test_prepare_refuses_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(sandbox.SandboxError, match="not a demo data folder"):
        sandbox.prepare(tmp_path)


def test_prepare_refuses_while_kept_servers_run(tmp_path: Path) -> None:
    folder = tmp_path / ".archiver"
    sandbox.prepare(folder)
    record(folder, pid=os.getpid(), marker=sys.executable)  # a live pid whose cmdline matches
    assert [r.pid for r in sandbox.left_running(folder)] == [os.getpid()]
    with pytest.raises(sandbox.SandboxError, match="archiver demo --stop"):
        sandbox.prepare(folder)


def test_a_reused_pid_is_not_taken_for_a_kept_server(tmp_path: Path) -> None:
    folder = tmp_path / ".archiver"
    sandbox.prepare(folder)
    record(folder, pid=os.getpid(), marker="redis-server 127.0.0.1:1")
    assert sandbox.left_running(folder) == []
    assert sandbox.stop(folder) == []  # and so it is never signalled


def test_clean_removes_the_folder_and_its_temporary_cluster(tmp_path: Path) -> None:
    folder = tmp_path / ".archiver"
    sandbox.prepare(folder)
    cluster = tmp_path / "archiver-pg-x"
    cluster.mkdir()
    record(folder, pid=2**22 + 1, marker="gone", temporary=[cluster])
    assert sandbox.clean(folder) == []
    assert not folder.exists()
    assert not cluster.exists()
    assert sandbox.clean(folder) == []  # nothing left: a no-op


def test_stop_removes_a_temporary_cluster_once_its_servers_are_down(tmp_path: Path) -> None:
    folder = tmp_path / ".archiver"
    sandbox.prepare(folder)
    cluster = tmp_path / "archiver-pg-x"
    cluster.mkdir()
    record(folder, pid=2**22 + 1, marker="gone", temporary=[cluster])
    assert sandbox.stop(folder) == []
    assert not cluster.exists()
    assert folder.exists()
    assert sandbox.left_running(folder) == []

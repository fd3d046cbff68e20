"""`python -m ops.bench --quick` end to end at a tiny size: it runs every scenario, writes a
JSON document with every key of the benchmark's specification and a verdict per target, and
leaves no process behind. Speed is never asserted here: only the shape of the results."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--quick", "--throughput-n", "300", "--naive-n", "50", "--latency-rate", "50",
    "--latency-seconds", "3", "--latency-lead-s", "1", "--background", "2000",
    "--sweep-keys", "2000", "--memory-n", "300", "--memory-buffer-s", "30",
    "--retention-rows", "6000", "--retention-rate", "50", "--retention-baseline-s", "1",
    "--cold-rows", "4000",
    "--api-rows", "6000", "--api-rate", "50", "--api-seconds", "1",
    "--erasure-rows", "6000", "--erasure-live", "500", "--erasure-rate", "50",
    "--erasure-baseline-s", "1", "--langgraph-threads", "30",
]  # fmt: skip
NUMBERS = {
    "throughput": ("ckpt_per_s", "msgs_per_s", "floor_rows_per_s", "ratio_vs_floor"),
    "naive": ("ckpt_per_s", "ratio_vs_naive"),
    "latency": tuple(
        f"{name}.{q}"
        for name in ("due_to_archived_ms", "archive_ms")
        for q in ("p50", "p99", "max")
    ),
    "sweep": ("sweep_s", "redis_ping_p99_ms"),
    "memory": ("peak_rss_mb",),
    "retention": (
        "rows",
        "rows_dropped",
        "drop_rows_per_s",
        "rows_deleted",
        "delete_rows_per_s",
        "reference_delete.rows_per_s",
        "archive_ms.baseline.p99",
        "archive_ms.during_retention.p99",
    ),
    "cold": (
        "rows",
        "floor_rows_per_s",
        "export_rows_per_s",
        "ratio_vs_floor",
        "compression_vs_table",
        "peak_rss_mb",
        "verify_rows_per_s",
        "restore_rows_per_s",
    ),
    "api": ("latency_ms.all.p99", "floor_ms.all.p50", "ratio_p50_vs_floor", "capacity_rps"),
    "langgraph": ("documents_per_s", "msgs_per_s", "floor_rows_per_s", "ratio_vs_floor"),
    "erasure": (
        "rows",
        "victim_rows",
        "erase_s",
        "erase_peak_rss_mb",
        "archiver_peak_rss_mb",
        "archive_ms.baseline.p99",
        "archive_ms.during_erasure.p99",
    ),
}
TARGETS = {
    "throughput.ratio_vs_floor",
    "naive.ratio_vs_naive",
    "latency.archive_ms.p99",
    "latency.due_to_archived_ms.p99",
    "sweep.sweep_s",
    "sweep.redis_ping_p99_ms",
    "memory.peak_rss_mb",
    "memory.all_archived_before_ttl",
    "retention.archive_ms.during_retention.p99",
    "cold.ratio_vs_floor",
    "cold.compression_vs_table",
    "cold.peak_rss_mb",
    "api.latency_ms.all.p99",
    "api.ratio_p50_vs_floor",
}


def lookup(document: dict[str, Any], path: str) -> Any:
    node: Any = document
    for part in path.split("."):
        assert isinstance(node, dict), f"{path}: {part} is not inside an object"
        assert part in node, f"{path}: {part} missing"
        node = node[part]
    return node


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line or environment names `text` (ours: the work dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            seen = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if text.encode() in seen:
            found.append(int(entry.name))
    return found


# Eight scenarios (cold and api joined the first six): about 90 s on a quiet machine, more
# while other suites share its two cores.
@pytest.mark.timeout(300)
def test_quick_bench_writes_every_key_and_a_verdict_per_target(tmp_path: Path) -> None:
    out, work = tmp_path / "bench.json", tmp_path / "work"
    argv = [sys.executable, "-m", "ops.bench", *TINY, "--json", str(out), "--workdir", str(work)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=280, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    results = orjson.loads(out.read_bytes())
    for scenario, names in NUMBERS.items():
        assert "error" not in results[scenario], results[scenario]
        for name in names:
            value = lookup(results, f"{scenario}.{name}")
            assert isinstance(value, int | float) and not isinstance(value, bool), (name, value)
    memory = results["memory"]
    assert isinstance(memory["all_archived_before_ttl"], bool)
    assert memory["archived"] + memory["missing"] == memory["checkpoints"] == 300
    assert results["throughput"]["rows"] == results["throughput"]["expected_rows"]
    assert results["langgraph"]["rows"] == results["langgraph"]["expected_rows"] == 300
    verdicts = {t["name"]: t["pass"] for t in results["targets"]}
    assert set(verdicts) == TARGETS
    assert all(isinstance(v, bool) for v in verdicts.values()), verdicts
    assert results["meta"]["quick"] is True
    assert processes_mentioning(str(tmp_path)) == []

"""ops/alerts.yml: valid for Prometheus (`promtool check rules`), passing its unit tests
(`promtool test rules ops/alerts.test.yml`), and naming only metrics the code exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.unit.test_dashboard import exported_metrics

OPS = Path(__file__).parents[2] / "ops"
RULES = OPS / "alerts.yml"
RULE_TESTS = OPS / "alerts.test.yml"


def promtool() -> str:
    """promtool from Debian's `prometheus` package; the suite fails (never skips) without it."""
    found = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(found).is_file():
        pytest.fail(
            "promtool not found: install Debian's prometheus package"
            " (apt-get install prometheus, or `make test-servers` as root)"
        )
    return found


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_rules_are_valid() -> None:
    result = run_promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rules_pass_their_unit_tests() -> None:
    result = run_promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rules_name_only_metrics_the_code_exports() -> None:
    live = "\n".join(
        line for line in RULES.read_text().splitlines() if not line.lstrip().startswith("#")
    )
    used = set(re.findall(r"\barchiver_[a-z0-9_]+", live))
    assert used, "no archiver metric found in ops/alerts.yml"
    unknown = used - exported_metrics().keys()
    assert not unknown, f"ops/alerts.yml uses {sorted(unknown)}, not in consumer/metrics.py"

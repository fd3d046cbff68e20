"""Fault-injection harness: prove that no checkpoint message is lost or duplicated.

`python -m ops.faults` runs each scenario against private Redis/PostgreSQL servers with a
seeded workload, checks the archive against what the workload wrote (an oracle, not the
archiver's counters) and writes a JSON report. See ops/faults/__main__.py for the options.
"""

from __future__ import annotations

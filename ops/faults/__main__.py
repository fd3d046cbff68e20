"""`python -m ops.faults [--quick] [--json PATH] [--only NAME,...] [--seed N] [--keep]`

Runs the fault scenarios against private servers and writes a JSON report (exit code 1 if
any scenario failed). The lead's `make faults` target runs this module.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ops.faults import report
from ops.faults.cluster import Cluster
from ops.faults.runner import Result, run_scenario
from ops.faults.scenarios import SCENARIOS


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ops.faults", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short versions of the scenarios")
    parser.add_argument("--json", default="faults-results.json", help="report path")
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    parser.add_argument("--seed", type=int, default=None, help="workload seed (default: time)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    return parser.parse_args(argv)


def selected(only: str) -> list[str]:
    names = [n.strip() for n in only.split(",") if n.strip()] or list(SCENARIOS)
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        raise SystemExit(
            f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}"
        )
    return names


async def run_all(
    names: list[str], *, quick: bool, seed: int, workdir: Path, cluster: Cluster
) -> list[Result]:
    results = []
    for i, name in enumerate(names):
        scenario = SCENARIOS[name](quick)
        print(f"[faults] {name}: {scenario.summary} ...", flush=True)
        result = await run_scenario(
            cluster, scenario, quick=quick, seed=seed + i, workdir=workdir / name
        )
        print(
            f"[faults] {name}: {'PASS' if result.passed else 'FAIL'} in {result.seconds}s",
            flush=True,
        )
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    names = selected(args.only)
    seed = args.seed if args.seed is not None else int(time.time())
    workdir = Path(tempfile.mkdtemp(prefix="archiver-faults-"))
    cluster = Cluster(workdir)
    started = time.monotonic()
    try:
        cluster.start()
        results = asyncio.run(
            run_all(names, quick=args.quick, seed=seed, workdir=workdir, cluster=cluster)
        )
    finally:
        cluster.close()
    doc = report.document(results, seed=seed, quick=args.quick, seconds=time.monotonic() - started)
    report.write(Path(args.json), doc)
    print(report.table(results))
    print(
        f"seed {seed}; report: {args.json}; logs: {workdir if args.keep or not doc['passed'] else 'removed'}"
    )
    if args.keep or not doc["passed"]:
        return 0 if doc["passed"] else 1
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The demo's display: latency quantiles from histogram buckets, the verdict, progress lines."""

from __future__ import annotations

import io
import math

import pytest
from prometheus_client import CollectorRegistry, Histogram
from rich.console import Console

from consumer.demo import display

INF = math.inf


def report(**changes: object) -> display.Report:
    values: dict[str, object] = {
        "conversations": 3, "written": 10, "malformed": 1, "shadowless": 2, "archived": 9,
        "messages": 40, "dead_letters": 1, "expected_messages": 40, "rows": 40, "duplicates": 0,
        "missing": 0, "short_conversations": [], "expected_dead": 1, "dead_rows": 1,
        "keys_left": 0, "late_customers": 1, "rows_without_customer": 0, "seconds": 12.0,
        "p50": 0.02, "p99": 0.2,
    }  # fmt: skip
    return display.Report(**(values | changes))  # type: ignore[arg-type]


def figures() -> display.Figures:
    return display.Figures(
        elapsed=3.2, planned=20, written=7, shadowless=2, alive=5, shadows=5, indexed=5,
        events={"set": 9, "expired": 1}, archived=2, messages=8, dead_letters=0, errors=0,
        sweeps=1, mode="events", p50=0.012, p99=None,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("counts", "q", "expected"),
    [
        ([(0.1, 0.0), (1.0, 10.0), (INF, 10.0)], 0.5, 0.55),
        ([(0.1, 10.0), (1.0, 10.0), (INF, 10.0)], 0.99, 0.099),
        ([(0.1, 0.0), (1.0, 0.0), (INF, 4.0)], 0.5, 1.0),
    ],
)
def test_quantile_interpolates_like_prometheus(
    counts: display.Buckets, q: float, expected: float
) -> None:
    assert display.quantile(counts, q) == pytest.approx(expected)


def test_quantile_of_nothing_is_none() -> None:
    assert display.quantile([(0.1, 0.0), (INF, 0.0)], 0.5) is None
    assert display.quantile([], 0.5) is None


def test_buckets_since_a_baseline() -> None:
    histogram = Histogram("h_seconds", "h", buckets=(0.1, 1.0), registry=CollectorRegistry())
    histogram.observe(0.05)
    before = display.buckets(histogram)
    histogram.observe(0.5)
    histogram.observe(0.7)
    after = display.since(display.buckets(histogram), before)
    assert after == [(0.1, 0.0), (1.0, 2.0), (INF, 2.0)]


def test_verdict_says_nothing_lost_only_when_every_figure_matches() -> None:
    assert display.verdict(report()) == (
        "nothing lost: 40/40 expected messages in conversation_history (0 duplicates),"
        " 1/1 malformed checkpoints in archive_dead_letters, Redis keys left: 0"
    )
    assert display.verdict(report(rows=39, missing=1)).startswith("LOST: 39/40")
    assert display.verdict(report(keys_left=2)).startswith("LOST: ")
    assert display.verdict(report(dead_rows=0)).startswith("LOST: ")
    assert display.verdict(report(rows=41, duplicates=1)).startswith("DUPLICATED: 40/40")


def test_missing_messages_are_counted_per_conversation() -> None:
    missing, short = display.missing_by_conversation({"a": 3, "b": 2, "c": 1}, {"a": 3, "b": 1})
    assert (missing, list(short)) == (2, ["b", "c"])


def test_off_a_terminal_progress_is_a_line_every_two_seconds() -> None:
    out = io.StringIO()
    with display.View(Console(file=out, width=200), "t") as view:
        assert not view.live
        view.show(figures())
        view.show(figures())
        view.show(figures(), final=True)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("[  3.2s] written 7/20 alive 5 shadows 5 events 10 archived 2")
    assert "p50 12 ms p99 –" in lines[0]


def test_the_report_shows_totals_verdict_and_the_sample() -> None:
    from datetime import UTC, datetime

    out = io.StringIO()
    r = report(sample_id="c-1", sample_about="tenant x")
    r.sample = [display.Row("user", datetime(2026, 1, 1, tzinfo=UTC), "hello\nthere", False)]
    display.render(Console(file=out, width=160), r)
    text = out.getvalue()
    assert "nothing lost: 40/40" in text
    assert "conversation c-1 read back from PostgreSQL (tenant x)" in text
    assert "hello there" in text


def test_the_live_panel_fits_80_columns_with_its_title_whole() -> None:
    out = io.StringIO()
    big = display.Figures(
        elapsed=312.0, planned=100_000, written=99_999, shadowless=12_345, alive=54_321,
        shadows=54_321, indexed=54_321, events={"set": 999_999, "expired": 99_999, "expire": 9_999},
        archived=99_999, messages=999_999, dead_letters=2_000, errors=12, sweeps=30,
        mode="degraded", p50=1.234, p99=12.345,
    )  # fmt: skip
    about = [("workload", "100000 conversations"),
             ("clock", "TTL 10m, archive after 9m 59s, sweep every 10s")]  # fmt: skip
    Console(file=out, width=80, force_terminal=True, color_system=None).print(
        display.panel(big, "archiver demo", about)
    )
    lines = out.getvalue().splitlines()
    assert "archiver demo" in lines[0]
    assert all(len(line) <= 80 for line in lines)
    assert "…" not in out.getvalue()
    assert "TTL 10m, archive after 9m 59s, sweep every 10s" in out.getvalue()

"""ops/grafana-dashboard.json: importable, and every query names only metrics and labels that
consumer/metrics.py exports, so the dashboard cannot drift from the code."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.metrics import MetricWrapperBase

from consumer import metrics

DASHBOARD = Path(__file__).parents[2] / "ops" / "grafana-dashboard.json"
DATASOURCE = "${DS_PROMETHEUS}"
TARGET_LABELS = frozenset({"job", "instance"})  # added by Prometheus to every scraped series
OTHER_METRICS = {"up": frozenset[str]()}  # Prometheus's own per-target series
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
}
PROMQL_WORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                          "and", "or", "unless", "offset", "inf", "nan"})  # fmt: skip


def exported_metrics() -> dict[str, frozenset[str]]:
    """Every series name `archiver run` serves for consumer/metrics.py -> its label names."""
    exported: dict[str, frozenset[str]] = {}
    for metric in vars(metrics).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        labels = frozenset(metric._labelnames)  # no public accessor in prometheus_client
        for family in metric.describe():
            for suffix in SUFFIXES[family.type]:
                extra = {"le"} if suffix == "_bucket" else set()
                exported[family.name + suffix] = labels | extra
    return exported


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (Grafana variables and ranges removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\$\{?\w+\}?", "", text)  # $__rate_interval, $job, ${DS_...}
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)  # matchers and range/subquery brackets
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\b[a-zA-Z_]\w*\s*\(", "(", text)  # function calls and aggregations
    text = re.sub(r"\b(?:\d+(?:ms|[smhdwy]))+\b", " ", text)  # durations (offset 5m)
    text = re.sub(r"\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b", " ", text)  # numbers
    words = set(re.findall(r"[a-zA-Z_:][\w:]*", text))
    return {w for w in words if w.lower() not in PROMQL_WORDS}


def selectors(expr: str) -> Iterator[tuple[str, set[str]]]:
    """(metric, label names in its matchers) for every `metric{...}` in the expression."""
    for name, body in re.findall(r"([a-zA-Z_:][\w:]*)\{([^}]*)\}", expr):
        yield name, set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", body))


def grouping_labels(expr: str) -> set[str]:
    found: set[str] = set()
    for body in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        found |= {label.strip() for label in body.split(",") if label.strip()}
    return found


def load() -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(DASHBOARD.read_bytes())
    return data


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel query and every query variable."""
    found = [
        (f"panel {p.get('title')!r}", t["expr"])
        for p in all_panels(dashboard["panels"])
        for t in p.get("targets", [])
    ]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        # label_values(selector, label) -> an expression that groups the selector by the label
        text = re.sub(r"^label_values\((.*),\s*(\w+)\)$", r"group by (\2) (\1)", text)
        found.append((f"variable {variable['name']!r}", text))
    return found


DASHBOARD_EXPRESSIONS = expressions(load())


def test_metric_names_are_found_in_promql() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le) (rate(archiver_archive_latency_seconds_bucket"
        '{job=~"$job", stage="x"}[$__rate_interval]))) / on (job) group_left time() - up > 0.5'
        " or absent(archiver_backlog offset 5m)"
    )
    assert metric_names(expr) == {
        "archiver_archive_latency_seconds_bucket",
        "up",
        "archiver_backlog",
    }
    assert dict(selectors(expr)) == {"archiver_archive_latency_seconds_bucket": {"job", "stage"}}
    assert grouping_labels(expr) == {"le", "job"}


def test_exported_metrics_follow_the_exposition_names() -> None:
    exported = exported_metrics()
    assert exported["archiver_errors_total"] == {"stage"}
    assert exported["archiver_archive_latency_seconds_bucket"] == {"le"}
    assert "archiver_backlog" in exported
    assert "archiver_errors" not in exported  # counters are exposed with _total


@pytest.mark.parametrize(("where", "expr"), DASHBOARD_EXPRESSIONS)
def test_queries_name_only_exported_metrics_and_labels(where: str, expr: str) -> None:
    known = exported_metrics() | OTHER_METRICS
    names = metric_names(expr)
    assert names, f"{where}: no metric found in {expr!r}"
    unknown = names - known.keys()
    assert not unknown, f"{where}: {sorted(unknown)} not exported by consumer/metrics.py"
    for name, labels in selectors(expr):
        extra = labels - known[name] - TARGET_LABELS
        assert not extra, f"{where}: {name} has no label {sorted(extra)}"
    allowed = TARGET_LABELS.union(*(known[n] for n in names))
    assert grouping_labels(expr) <= allowed, f"{where}: grouping by unknown labels in {expr!r}"


def test_every_exported_metric_has_a_panel() -> None:
    shown = {n for _, expr in DASHBOARD_EXPRESSIONS for n in metric_names(expr)}
    families = {
        family.name
        for metric in vars(metrics).values()
        if isinstance(metric, MetricWrapperBase)
        for family in metric.describe()
    }
    missing = {f for f in families if not any(n.startswith(f) for n in shown)}
    assert not missing, f"add panels to ops/grafana-dashboard.json for {sorted(missing)}"


def test_dashboard_is_importable_with_a_prometheus_input() -> None:
    dashboard = load()
    assert [(i["name"], i["type"], i["pluginId"]) for i in dashboard["__inputs"]] == [
        ("DS_PROMETHEUS", "datasource", "prometheus")
    ]
    assert dashboard["id"] is None
    assert dashboard["uid"] and len(dashboard["uid"]) <= 40
    assert dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    panels = list(all_panels(dashboard["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == DATASOURCE, panel["title"]
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"]["uid"] == DATASOURCE, variable["name"]

"""Grafana dashboard, statically: valid JSON, a query on every panel, only metrics the service
exports, and PromQL that Prometheus's own parser (via promtool) accepts.

tests/observability/dashboard.py's dashboard_queries() gives the same expressions to tests that
run them against a live Prometheus.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml
from dashboard import DASHBOARD, dashboard_queries, load_dashboard, query_panels, substitute_variables

# Metric names the service exports (the service contract), as they appear in PromQL.
SERVICE_METRICS = {
    "http_requests_total",
    "http_request_duration_seconds_bucket",
    "http_requests_in_flight",
    "http_request_size_bytes_bucket",
    "http_response_size_bytes_bucket",
    "http_problems_total",
    "analysis_jobs_total",
    "analysis_duration_seconds_bucket",
    "analysis_pool_queue_depth",
    "analysis_pool_busy_workers",
    "analysis_pool_workers",
    "analysis_pool_restarts_total",
    "analysis_requests_shed_total",
    "service_ready",
    "build_info",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
}
# What the dashboard must show (the operations guide refers to these panels).
REQUIRED_METRICS = {
    "http_requests_total",  # request rate, error ratio
    "http_request_duration_seconds_bucket",  # p50 / p99 by route
    "http_requests_in_flight",
    "analysis_pool_busy_workers",  # pool saturation ...
    "analysis_pool_workers",  # ... busy / workers
    "analysis_pool_queue_depth",
    "analysis_requests_shed_total",
    "analysis_jobs_total",  # dispatch mix
    "analysis_pool_restarts_total",
    "up",  # replicas scraped
    "service_ready",  # replicas ready
}
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless"}

DASHBOARD_JSON = load_dashboard()
PANELS = query_panels(DASHBOARD_JSON)
EXPRESSIONS = [target["expr"] for panel in PANELS for target in panel["targets"]]


def _metric_names(expr: str) -> set[str]:
    """Metric names selected by a PromQL expression (identifiers followed by `{`)."""
    names = set(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{", expr))
    return names - PROMQL_KEYWORDS


def test_dashboard_is_valid_json_with_a_stable_identity():
    document = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert document["uid"] == "sre-microservice"
    assert document["title"]
    ids = [panel["id"] for panel in document["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_datasource_is_a_template_variable_used_by_every_query():
    variables = {variable["name"]: variable for variable in DASHBOARD_JSON["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    for panel in PANELS:
        assert panel["datasource"] == datasource, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == datasource, panel["title"]


@pytest.mark.parametrize("panel", PANELS, ids=lambda panel: panel["title"])
def test_every_panel_has_a_query(panel):
    assert panel["targets"], f"panel {panel['title']!r} has no target"
    for target in panel["targets"]:
        assert target.get("expr", "").strip(), f"panel {panel['title']!r} has a target without expr"


def test_panels_do_not_overlap():
    taken: dict[tuple[int, int], str] = {}
    for panel in DASHBOARD_JSON["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']!r} overlaps {taken[(x, y)]!r}"
                taken[(x, y)] = panel["title"]


@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_every_query_is_scoped_to_the_job_and_uses_known_metrics(expr):
    assert 'job="$job"' in expr
    assert _metric_names(expr) <= SERVICE_METRICS | {"up"}, expr


def test_dashboard_shows_what_operators_need():
    shown = set().union(*(_metric_names(expr) for expr in EXPRESSIONS))
    assert REQUIRED_METRICS <= shown, f"missing: {sorted(REQUIRED_METRICS - shown)}"
    quantiles = {
        float(quantile)
        for expr in EXPRESSIONS
        if "http_request_duration_seconds_bucket" in expr
        for quantile in re.findall(r"histogram_quantile\(([\d.]+)", expr)
    }
    assert {0.5, 0.99} <= quantiles


def test_dashboard_queries_substitute_every_variable():
    queries = dashboard_queries(job="svc-under-test", rate_interval="2m")
    assert len(queries) == len(EXPRESSIONS)
    for query in queries:
        assert "$" not in query, query
        assert 'job="svc-under-test"' in query
    assert any("[2m]" in query for query in queries)


def test_unknown_template_variables_are_refused():
    with pytest.raises(KeyError):
        substitute_variables('up{instance="$instance"}', {"job": "x"})
    assert substitute_variables('up{job="${job}"}[$__rate_interval]', {"job": "a", "__rate_interval": "1m"}) == (
        'up{job="a"}[1m]'
    )


def test_every_query_parses_as_promql(tmp_path):
    # promtool has no "parse this expression" command; recording rules go through the real parser.
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: install the Debian package 'prometheus' (scripts/system-packages.txt)")
    queries = dashboard_queries()
    rules = {
        "groups": [
            {
                "name": "dashboard-queries",
                "rules": [{"record": f"dashboard:query_{index}", "expr": query} for index, query in enumerate(queries)],
            }
        ]
    }
    (tmp_path / "dashboard.rules.yaml").write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [promtool, "check", "rules", "dashboard.rules.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout

"""Read the Grafana dashboard's PromQL so tests can check it statically and run it for real."""

from __future__ import annotations

import json
import re
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "sre-microservice.json"

# Row panels only group other panels and carry no query.
_CONTAINER_PANEL_TYPES = {"row"}


def load_dashboard(path: Path = DASHBOARD) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def query_panels(dashboard: dict) -> list[dict]:
    """Every panel that shows data, including panels nested in collapsed rows."""
    panels = []
    for panel in dashboard["panels"]:
        if panel["type"] in _CONTAINER_PANEL_TYPES:
            panels.extend(panel.get("panels", []))
        else:
            panels.append(panel)
    return panels


def substitute_variables(expr: str, variables: dict[str, str]) -> str:
    """Replace Grafana's $name and ${name} references; unknown variables are an error."""

    def replace(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise KeyError(f"dashboard expression uses unknown variable ${name}: {expr}")
        return variables[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", replace, expr)


def dashboard_queries(job: str = "sre-microservice", rate_interval: str = "1m", path: Path = DASHBOARD) -> list[str]:
    """All PromQL expressions of the dashboard, ready to send to Prometheus.

    `job` stands in for the $job template variable, `rate_interval` for Grafana's
    $__rate_interval (choose at least four scrape intervals of the Prometheus queried).
    """
    variables = {"job": job, "__rate_interval": rate_interval}
    return [
        substitute_variables(target["expr"], variables)
        for panel in query_panels(load_dashboard(path))
        for target in panel["targets"]
    ]

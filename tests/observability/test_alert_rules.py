"""Alert and recording rules: the PrometheusRule's groups pass `promtool check rules`, its unit
tests (k8s/monitoring/tests) pass `promtool test rules`, and the rules keep the shape the SLO
and the runbooks rely on.

The PrometheusRule is the single source: the plain rules file promtool reads is written from its
spec.groups into a temporary directory, next to copies of the unit-test files.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "k8s" / "monitoring"
PROMETHEUS_RULE = MONITORING / "prometheusrule.yaml"
UNIT_TESTS = sorted((MONITORING / "tests").glob("*.yaml"))
# The name the unit-test files list under rule_files.
GENERATED_RULES_NAME = "prometheusrule.rules.yaml"

JOB_SELECTOR = 'job="sre-microservice"'
SLO_TARGET = 0.999
# Google SRE workbook, "Alerting on SLOs", multiwindow multi-burn-rate alerts for a 30-day SLO:
# (long window, short window) -> burn rate, per alert.
BURN_RATE_PAIRS = {
    "ErrorBudgetBurnFast": {("1h", "5m"): 14.4, ("6h", "30m"): 6.0},
    "ErrorBudgetBurnSlow": {("1d", "2h"): 3.0, ("3d", "6h"): 1.0},
}
SEVERITIES = {"ErrorBudgetBurnFast": "page", "ServiceUnavailable": "page"}  # every other alert: ticket


def _spec_groups() -> list[dict]:
    return yaml.safe_load(PROMETHEUS_RULE.read_text(encoding="utf-8"))["spec"]["groups"]


GROUPS = _spec_groups()
RULES = [rule for group in GROUPS for rule in group["rules"]]
ALERTS = {rule["alert"]: rule for rule in RULES if "alert" in rule}
RECORDS = {rule["record"]: rule for rule in RULES if "record" in rule}


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: install the Debian package 'prometheus' (scripts/system-packages.txt)")
    return path


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def rules_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("rules")
    (directory / GENERATED_RULES_NAME).write_text(yaml.safe_dump({"groups": GROUPS}, sort_keys=False))
    for unit_test in UNIT_TESTS:
        shutil.copy(unit_test, directory / unit_test.name)
    return directory


# --- promtool ---------------------------------------------------------------------------------


def test_promtool_accepts_the_rules(rules_dir):
    result = _run([_promtool(), "check", "rules", GENERATED_RULES_NAME], rules_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(RULES)} rules found" in result.stdout


@pytest.mark.slow
def test_promtool_unit_tests_pass(rules_dir):
    assert UNIT_TESTS, "no promtool unit tests in k8s/monitoring/tests"
    result = _run([_promtool(), "test", "rules", *(path.name for path in UNIT_TESTS)], rules_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(UNIT_TESTS), result.stdout


# --- coverage of the unit tests ---------------------------------------------------------------


def _unit_test_cases() -> list[dict]:
    cases = []
    for path in UNIT_TESTS:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert document["rule_files"] == [GENERATED_RULES_NAME], path.name
        cases.extend(document["tests"])
    return cases


UNIT_TEST_CASES = _unit_test_cases()


@pytest.mark.parametrize("alertname", sorted(ALERTS))
def test_every_alert_has_a_firing_and_a_quiet_unit_test(alertname):
    checks = [
        check
        for case in UNIT_TEST_CASES
        for check in case.get("alert_rule_test", [])
        if check["alertname"] == alertname
    ]
    assert any(check.get("exp_alerts") for check in checks), f"no unit test where {alertname} fires"
    assert any(not check.get("exp_alerts") for check in checks), f"no unit test where {alertname} stays quiet"


def test_every_recording_rule_value_is_unit_tested():
    checked = {check["expr"] for case in UNIT_TEST_CASES for check in case.get("promql_expr_test", [])}
    assert set(RECORDS) <= checked, f"recording rules without a value check: {sorted(set(RECORDS) - checked)}"


# --- shape of the rules -----------------------------------------------------------------------


@pytest.mark.parametrize("alertname", sorted(ALERTS))
def test_alert_has_severity_and_runbook_annotations(alertname):
    alert = ALERTS[alertname]
    assert alert["labels"]["severity"] == SEVERITIES.get(alertname, "ticket")
    annotations = alert["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url"}
    assert annotations["summary"].strip() and annotations["description"].strip()
    assert annotations["runbook_url"] == f"docs/operations.md#alert-{alertname.lower()}"


def test_every_rule_reads_only_this_service_or_its_own_recordings():
    for rule in RULES:
        expr = rule["expr"]
        selectors = re.findall(r"\b([a-z_][a-z0-9_:]*)\s*\{([^}]*)\}", expr)
        raw_selectors = [labels for name, labels in selectors if name not in RECORDS]
        bare_records = [name for name in re.findall(r"\b[a-z_]+:[a-z0-9_:]+", expr)]
        assert raw_selectors or bare_records, rule
        for labels in raw_selectors:
            assert JOB_SELECTOR in labels, f"{rule.get('record') or rule.get('alert')}: {expr}"
        assert set(bare_records) <= set(RECORDS), rule


def test_error_ratio_rules_differ_only_in_their_window():
    windows = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"]
    reference = RECORDS["job:http_request_errors:ratio_rate5m"]["expr"]
    for window in windows:
        expr = RECORDS[f"job:http_request_errors:ratio_rate{window}"]["expr"]
        assert expr == reference.replace("[5m]", f"[{window}]")
    assert reference.count("[5m]") == 3
    assert 'status=~"5.."' in reference
    assert 'route!~"/health|/ready|/metrics"' in reference


@pytest.mark.parametrize("alertname", sorted(BURN_RATE_PAIRS))
def test_burn_rate_alerts_use_the_workbook_windows_and_rates(alertname):
    expr = " ".join(ALERTS[alertname]["expr"].split())
    pair = re.compile(
        r"\( job:http_request_errors:ratio_rate(\w+) > \(([\d.]+) \* ([\d.]+)\) and "
        r"job:http_request_errors:ratio_rate(\w+) > \(([\d.]+) \* ([\d.]+)\) \)"
    )
    found = {}
    for long_window, long_rate, long_budget, short_window, short_rate, short_budget in pair.findall(expr):
        assert long_rate == short_rate and long_budget == short_budget
        assert float(long_budget) == pytest.approx(1 - SLO_TARGET)
        found[(long_window, short_window)] = float(long_rate)
    assert found == BURN_RATE_PAIRS[alertname]
    assert expr.count(" or ") == len(found) - 1

"""The Grafana dashboard and the Prometheus alert rules agree with the code and the README.

``promtool`` (Debian's ``prometheus`` package, installed by scripts/bootstrap)
checks the rules, runs their unit tests (``alerts.test.yml``), and parses every
dashboard query as a recording rule. That each metric named here exists on a
running worker is checked in tests/e2e/test_observability.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from connector.domain.audit import AuditRecord, DeadLetter, Outcome
from connector.infra.metrics import Metrics
from connector.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "connector.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"

_METRIC = re.compile(r"\b(connector_[a-z_]+)\b")
# Series suffixes Prometheus derives from a counter or histogram family.
_SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def alert_queries() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return [rule["expr"] for g in groups for rule in g["rules"]]


def metric_names(queries: list[str]) -> set[str]:
    """Every connector series a query reads (label values such as outcome= excluded)."""
    names: set[str] = set()
    for query in queries:
        without_labels = re.sub(r"\{[^}]*\}", "", query)
        names |= set(_METRIC.findall(without_labels))
    return names


def family(series: str) -> str:
    for suffix in _SUFFIXES:
        if series.endswith(suffix):
            return series.removesuffix(suffix)
    return series


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing in CI: scripts/bootstrap installs it (prometheus)")
        pytest.skip("promtool not installed (Debian package prometheus; scripts/bootstrap)")
    return found


def test_alert_rules_pass_promtool_check_and_their_unit_tests() -> None:
    tool = promtool()
    check = subprocess.run(
        [tool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS" in check.stdout
    run = subprocess.run(
        [tool, "test", "rules", ALERT_TESTS.name],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ALERT_TESTS.parent,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_example_prometheus_config_loads_the_rules() -> None:
    tool = promtool()
    check = subprocess.run(
        [tool, "check", "config", str(ALERTS.parent / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "alerts.yml" in check.stdout + check.stderr


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    tool = promtool()
    # Grafana's own variables are not PromQL; a fixed window stands in for them.
    rules = [
        {"record": f"dashboard:query_{i}", "expr": q.replace("$__rate_interval", "5m")}
        for i, q in enumerate(dashboard_queries())
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    check = subprocess.run(
        [tool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_promtool_check_fails_on_a_broken_rule(tmp_path: Path) -> None:
    """The check above can fail: a rule with a syntax error is refused."""
    tool = promtool()
    path = tmp_path / "broken.yml"
    path.write_text("groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: sum(\n")
    check = subprocess.run(
        [tool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode != 0


def test_dashboard_and_rules_name_only_registered_and_documented_metrics() -> None:
    registered = {m.name for m in Metrics().registry.collect()}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    used = metric_names(dashboard_queries()) | metric_names(alert_queries())
    assert used, "no metric found in the dashboard and rules"
    assert {family(s) for s in used} <= registered
    # The README documents every metric the worker serves, by its series name.
    for name in sorted(registered):
        assert re.search(rf"`{name}(_total)?`", readme), f"{name} is not documented in the README"
    # And the dashboard shows every family (a metric nobody looks at is noise).
    assert {family(s) for s in metric_names(dashboard_queries())} == registered


def test_the_rules_cover_the_issue_13_conditions() -> None:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    alerts = {rule["alert"]: rule["expr"] for g in groups for rule in g["rules"]}
    wanted = {
        "ConnectorConsumerLagGrowing": "connector_consumer_lag",
        "ConnectorDeadLetters": "connector_dead_letters_total",
        "ConnectorCircuitOpen": "connector_circuit_open",
        "ConnectorEventsParked": 'outcome="parked"',
        "ConnectorWorkerNotReady": "connector_ready",
        "ConnectorWorkerDown": "up{",
        "ConnectorDeliveryLatencyHigh": "histogram_quantile(0.99",
    }
    for alert, needle in wanted.items():
        assert needle in alerts[alert], alert


def test_worker_down_fires_whatever_the_scrape_job_is_named() -> None:
    """Issue 21 trap 9: annotation-based scraping on Kubernetes names the job kubernetes-pods."""
    tool = promtool()
    run = subprocess.run(
        [tool, "test", "rules", "alerts.kubernetes.test.yml"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ALERTS.parent,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_example_prometheus_targets_are_names_that_resolve() -> None:
    """No hard-coded host names that exist nowhere: the compose service name, by DNS."""
    config = yaml.safe_load((ALERTS.parent / "prometheus.yml").read_text(encoding="utf-8"))
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    [job] = config["scrape_configs"]
    assert "static_configs" not in job
    [dns] = job["dns_sd_configs"]
    assert set(dns["names"]) <= set(compose["services"])
    assert dns["type"] == "A"
    assert dns["port"] == Settings().web_port


def test_dashboard_has_a_data_source_variable_and_job_instance_filters() -> None:
    """Issue 21 trap 9: file provisioning leaves ${DS_PROMETHEUS} unset; one Prometheus may
    scrape several deployments."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance"):
        assert variables[name]["type"] == "query"
        assert variables[name]["includeAll"] is True
        assert variables[name]["datasource"]["uid"] == "${datasource}"
    assert "${DS_PROMETHEUS}" not in DASHBOARD.read_text(encoding="utf-8")
    for panel in dashboard["panels"]:
        for target in [panel, *panel.get("targets", [])]:
            if "datasource" in target:
                assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    for query in dashboard_queries():
        selectors = re.findall(r"\b(connector_[a-z_]+)(\{[^}]*\})?", query)
        for name, labels in selectors:
            assert 'job=~"$job"' in labels and 'instance=~"$instance"' in labels, (name, query)


def _scrape(metrics: Metrics, name: str, labels: dict[str, str]) -> str:
    """One sample of a series as promtool's input notation: its value, or _ if absent."""
    for fam in text_string_to_metric_families(metrics.render().decode()):
        for sample in fam.samples:
            if sample.name == name and sample.labels == labels:
                return f"{sample.value:g}"
    return "_"


def test_a_workers_first_dead_letter_and_parked_events_fire_their_alerts(
    tmp_path: Path,
) -> None:
    """The input series are what a worker really serves, scraped once a minute: it starts
    at minute 2, dead-letters one unreadable record at minute 4 and parks one completion
    a minute from minute 4 on. A series that first appears at 1 fires nothing."""
    tool = promtool()
    letters = ("connector_dead_letters_total", {"code": "not_json"})
    parked = ("connector_events_total", {"event_type": "order.completed", "outcome": "parked"})
    scrapes: dict[str, list[str]] = {"letters": ["_", "_"], "parked": ["_", "_"]}
    metrics = Metrics()
    for minute in range(2, 25):
        if minute == 4:
            metrics.observe_dead_letter(DeadLetter(worker_id="w1", code="not_json", reason="x"))
        if minute >= 4:
            metrics.observe_audit(
                AuditRecord(
                    worker_id="w1",
                    outcome=Outcome.PARKED,
                    terminal=False,
                    event_type="order.completed",
                )
            )
        scrapes["letters"].append(_scrape(metrics, *letters))
        scrapes["parked"].append(_scrape(metrics, *parked))

    def series(name: str, labels: dict[str, str]) -> str:
        inner = ",".join(f'{k}="{v}"' for k, v in {**labels, "instance": "w1"}.items())
        return f"{name}{{{inner}}}"

    firing = "count by (alertname) (ALERTS{alertstate='firing'})"
    test = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": series(*letters), "values": " ".join(scrapes["letters"])},
                    {"series": series(*parked), "values": " ".join(scrapes["parked"])},
                ],
                "promql_expr_test": [
                    {
                        "expr": firing,
                        "eval_time": "6m",
                        "exp_samples": [
                            {"labels": '{alertname="ConnectorDeadLetters"}', "value": 1}
                        ],
                    },
                    {
                        "expr": firing,
                        "eval_time": "21m",
                        "exp_samples": [
                            {"labels": '{alertname="ConnectorEventsParked"}', "value": 1}
                        ],
                    },
                ],
            }
        ],
    }
    path = tmp_path / "worker.test.yml"
    path.write_text(yaml.safe_dump(test))
    run = subprocess.run(
        [tool, "test", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, f"{scrapes}\n{run.stdout}{run.stderr}"

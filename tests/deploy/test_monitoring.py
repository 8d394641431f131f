"""The monitoring files agree with the code: the PodMonitor scrapes every step, the
PrometheusRule carries alerts.yml, and the dashboard and alerts use only metrics and labels
that quotaflow's metric modules define."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from quotaflow.model import metrics as model_metrics
from quotaflow.runtime import metrics as runtime_metrics
from quotaflow.runtime.steps import ALL_STEPS
from tests.conftest import REPO
from tests.deploy.schemas import by_kind

METRIC = re.compile(r"\b((?:qf|ml)_[a-z_]+?)(?:_total|_bucket|_sum|_count)?\b")


def exprs() -> list[str]:
    """Every PromQL expression of the Grafana dashboard and the alert rules."""
    dashboard = json.loads((REPO / "infra/monitoring/grafana-dashboard.json").read_text())
    alerts = yaml.safe_load((REPO / "infra/monitoring/alerts.yml").read_text())
    return ([t["expr"] for p in dashboard["panels"] for t in p["targets"]]
            + [r["expr"] for g in alerts["groups"] for r in g["rules"]])


def collectors() -> list[Any]:
    return [c for module in (runtime_metrics, model_metrics) for c in vars(module).values()
            if hasattr(c, "_labelnames")]


def test_prometheus_operator_resources_scrape_every_step_and_carry_the_alert_rules() -> None:
    docs = {d["kind"]: d for d in yaml.safe_load_all(
        (REPO / "infra/monitoring/prometheus-operator.yaml").read_text())}
    assert all(d["apiVersion"] == "monitoring.coreos.com/v1" and d["metadata"]["name"]
               for d in docs.values())
    alerts = yaml.safe_load((REPO / "infra/monitoring/alerts.yml").read_text())
    assert docs["PrometheusRule"]["spec"] == alerts
    (expr,) = docs["PodMonitor"]["spec"]["selector"]["matchExpressions"]
    scraped = {*ALL_STEPS, "analytics", "alerts"}
    assert (expr["key"], set(expr["values"])) == ("app.kubernetes.io/component", scraped)
    for workload in [*by_kind("Service"), *by_kind("Deployment")]:
        template = workload["spec"]["template"]
        assert template["metadata"]["labels"]["app.kubernetes.io/component"] in expr["values"]
        # the container the scrape keeps is named as its component
        (container,) = template["spec"]["containers"]
        assert container["name"] in scraped


def test_scrapes_go_to_the_metrics_port_by_the_pods_annotation_never_a_declared_port() -> None:
    docs = {d["kind"]: d for d in yaml.safe_load_all(
        (REPO / "infra/monitoring/prometheus-operator.yaml").read_text())}
    (endpoint,) = docs["PodMonitor"]["spec"]["podMetricsEndpoints"]
    assert "port" not in endpoint and "targetPort" not in endpoint
    address = [r for r in endpoint["relabelings"] if r.get("targetLabel") == "__address__"]
    assert address and address[0]["sourceLabels"][-1] == \
        "__meta_kubernetes_pod_annotation_prometheus_io_port"
    scrape = yaml.safe_load((REPO / "infra/monitoring/prometheus.yml").read_text())
    (job,) = scrape["scrape_configs"]
    assert any(r.get("target_label") == "__address__" and r["source_labels"][-1] ==
               "__meta_kubernetes_pod_annotation_prometheus_io_port"
               for r in job["relabel_configs"])


def test_dashboard_and_alerts_use_metrics_the_code_defines() -> None:
    names = {c._name for c in collectors()}  # without _total, as METRIC strips it
    used = {m for e in exprs() for m in METRIC.findall(e)}
    assert used, "no metric referenced"
    assert used <= names, used - names


def test_dashboard_and_alerts_group_and_filter_only_by_labels_the_metrics_have() -> None:
    labels: dict[str, set[str]] = {}
    for collector in collectors():
        labels.setdefault(collector._name, set()).update(collector._labelnames)
    for expr in exprs():
        have = set().union(*(labels[m] for m in set(METRIC.findall(expr)))) | {"le"}
        grouped = {x.strip() for g in re.findall(r"\bby \(([^)]*)\)", expr)
                   for x in g.split(",")}
        filtered = set(re.findall(r"[{,]\s*([a-z_]+)\s*=~?", expr))
        assert grouped | filtered <= have, (expr, (grouped | filtered) - have)

"""The monitoring component: a ServiceMonitor with the metrics token, a dashboard of real series."""

from __future__ import annotations

import json
import re
import secrets

import pytest
from prometheus_client.parser import text_string_to_metric_families

from settings import load_settings
from tests.servers import ROOT
from tests.shipping.manifests import MONITORING, NAMESPACE, config, find, selects


def test_monitoring_component_scrapes_the_app_with_the_metrics_token(monitored, base):
    monitor = find(monitored, "ServiceMonitor", "mailroom")
    service_ = find(monitored, "Service", "mailroom")
    assert selects(monitor["spec"]["selector"]["matchLabels"], service_["metadata"]["labels"])
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {port["name"] for port in service_["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    credentials = endpoint["authorization"]["credentials"]
    assert endpoint["authorization"]["type"] == "Bearer"
    token_secret = find(monitored, "Secret", credentials["name"])
    assert credentials["key"] in token_secret["stringData"]
    # The app requires the very token Prometheus presents.
    container = find(monitored, "Deployment", "mailroom")["spec"]["template"]["spec"]
    (variable,) = [v for v in container["containers"][0]["env"] if v["name"] == "METRICS_TOKEN"]
    assert variable["valueFrom"]["secretKeyRef"] == {
        "name": credentials["name"],
        "key": credentials["key"],
    }
    # The example token is refused, so it cannot go live; the one its comment makes is taken.
    example = token_secret["stringData"][credentials["key"]]
    variables = {**config(monitored), "METRICS_TOKEN": example}
    variables.pop("MAILROOM_ADMIN_TOKEN_FILE")  # a file in the pod: not here
    with pytest.raises(SystemExit, match="METRICS_TOKEN"):
        load_settings(variables)
    assert (
        "openssl rand -hex 32" in (ROOT / "manifests/components/monitoring/secret.yaml").read_text()
    )
    variables["METRICS_TOKEN"] = secrets.token_hex(32)
    assert load_settings(variables).metrics_token == variables["METRICS_TOKEN"]
    # Without the component nothing changes: no token, no ServiceMonitor.
    assert not [d for d in base if d["kind"] == "ServiceMonitor"]
    dashboard = find(monitored, "ConfigMap", "mailroom-grafana-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["mailroom.json"])["uid"] == "mailroom"


def test_grafana_dashboard_plots_metrics_the_service_exports(client):
    dashboard = json.loads((ROOT / MONITORING / "grafana-dashboard.json").read_text())
    client.get("/health")  # so that the labelled request series exist
    exported = {
        sample.name
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for sample in family.samples
    }
    titles = {panel["title"] for panel in dashboard["panels"]}
    for wanted in ("Request rate", "p50 latency", "p99 latency", "Error rate", "pool saturation"):
        assert any(wanted.lower() in title.lower() for title in titles), wanted
    assert "Messages per second" in titles
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(re.findall(r"\b(mailroom_\w+)", target["expr"]))
            assert names, target["expr"]
            assert names <= exported, f"{panel['title']}: {names - exported} not exported"
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]

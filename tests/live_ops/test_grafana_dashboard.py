"""deploy/grafana/strangler.json: a dashboard a newcomer imports as it is, whose queries a real Prometheus answers.

The file is checked as Grafana reads it (uid, title, a Prometheus datasource
variable every query uses, a route variable, panels with targets); then every
query, with the variables put in as Grafana would, goes to a real Prometheus
that scraped a proxy under traffic: each must parse, and the core panels must
return series that agree with what was sent.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx

from tests.support.prometheus import Prometheus, Traffic
from tests.support.servers import REPO, Named, free_port, wait_until

DASHBOARD = REPO / "deploy" / "grafana" / "strangler.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# As Grafana fills them in: every route (the variable's "All"), a rate window of four scrapes and more.
VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m", "$route": ".*"}
# Families with a route label: a panel showing them follows the route variable.
PER_ROUTE = {"strangler_requests_total", "strangler_request_duration_seconds_bucket", "strangler_upstream_attempts_total",
             "strangler_retries_total", "strangler_circuit_breaker_state", "strangler_fallbacks_total",
             "strangler_split_percent", "strangler_proxy_errors_total", "strangler_shadow_requests_total",
             "strangler_ramp_percent", "strangler_ramp_state", "strangler_ramp_decisions_total"}
CORE = ("Served by new services (last 5 min)", "Requests/s by route and upstream", "Error rate (5xx share of answers)",
        "p95 latency", "Circuit breaker state", "Breakers open")


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def query_panels() -> list[dict]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def filled(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert not re.search(r"\$\{?[A-Za-z_]", expr), f"a variable this test does not fill in: {expr}"
    return expr


def test_the_dashboard_is_a_valid_grafana_dashboard() -> None:
    found = dashboard()
    assert found["uid"] == "strangler-migration" and found["title"] and isinstance(found["schemaVersion"], int)
    variables = {variable["name"]: variable for variable in found["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    route = variables["route"]
    assert route["type"] == "query" and route["datasource"] == DATASOURCE
    assert route["includeAll"] and route["multi"] and route["allValue"] == ".*"
    assert "label_values(" in route["query"]["query"] and ", route)" in route["query"]["query"]
    panels = query_panels()
    assert len(panels) >= 15
    ids = [panel["id"] for panel in found["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels:
        assert panel["title"] and panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"{panel['title']} has no targets"
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"} and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE and target["expr"].strip(), panel["title"]
            if PER_ROUTE & set(re.findall(r"strangler_\w+", target["expr"])):
                assert 'route=~"$route"' in target["expr"], f"{panel['title']}: ignores the route variable"
    assert {panel["title"] for panel in panels} >= set(CORE)


def test_every_panel_query_parses_and_the_core_panels_answer_from_a_real_prometheus(
        tmp_path: Path, start_upstream, start_proxy) -> None:
    legacy, orders = start_upstream(Named("legacy")), start_upstream(Named("orders"))
    refused = f"http://127.0.0.1:{free_port()}"          # nothing listens: payments' breaker opens
    proxy = start_proxy(f"""
version: 1
upstreams:
  legacy: {{url: "{legacy.url}"}}
  orders: {{url: "{orders.url}"}}
  payments: {{url: "{refused}", connect_timeout: 200ms}}
defaults:
  sticky: none
  retry: {{attempts: 1}}
  circuit_breaker: {{failure_threshold: 3, recovery_timeout: 5m}}
routes:
  - name: orders
    match: {{path: /orders}}
    split: {{orders: 40, legacy: 60}}
    fallback: legacy
  - name: payments
    match: {{path: /payments}}
    to: payments
  - name: everything-else
    match: {{path: /}}
    to: legacy
""")
    for _ in range(3):
        assert httpx.get(proxy.url + "/payments").status_code == 502
    prometheus = Prometheus(tmp_path, f"127.0.0.1:{proxy.admin_port}").start()
    panels = {panel["title"]: panel for panel in query_panels()}
    try:
        with Traffic(proxy.url, clients=4, paths=("/orders", "/orders", "/orders", "/")) as traffic:
            def core_answers() -> bool:
                return all(ask(prometheus, title, target) for title in CORE for target in panels[title]["targets"])

            wait_until(core_answers, timeout_s=60, interval_s=0.5, what="prometheus to answer the core panels")
            # Every query of every panel parses; those of features that are off answer nothing.
            answers = {title: [ask(prometheus, title, target) for target in panel["targets"]]
                       for title, panel in panels.items()}
        assert traffic.errors == []
    finally:
        prometheus.stop()

    def values(title: str, target: int = 0) -> dict[tuple[str, ...], float]:
        return {tuple(series["metric"].values()): float(series["value"][1]) for series in answers[title][target]}

    # 3 of 4 clients on /orders (40% new), 1 on /: about 30% of everything served by orders.
    [share] = values("Served by new services (last 5 min)").values()
    assert 0.15 < share < 0.45, share
    assert set(values("Requests/s by route and upstream")) >= {("orders", "orders"), ("orders", "legacy"),
                                                              ("everything-else", "legacy")}
    errors = values("Error rate (5xx share of answers)")
    assert errors[("orders", "orders")] == 0 and errors[("orders", "legacy")] == 0
    p95 = values("p95 latency")
    assert all(0 < p95[pair] < 1 for pair in (("orders", "orders"), ("orders", "legacy"), ("everything-else", "legacy")))
    breakers = values("Circuit breaker state")
    assert breakers[("payments", "payments")] == 2 and breakers[("orders", "orders")] == 0
    assert list(values("Breakers open").values()) == [1]
    moved, routes = values("Routes fully on new services", 0), values("Routes fully on new services", 1)
    assert (list(moved.values()), list(routes.values())) == ([1], [3])     # payments names no legacy upstream


def ask(prometheus: Prometheus, title: str, target: dict) -> list[dict]:
    response = httpx.get(prometheus.url + "/api/v1/query", params={"query": filled(target["expr"])}, timeout=5)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "success", (
        f"{title} [{target['refId']}] is refused: {body.get('error')}\n{filled(target['expr'])}")
    return body["data"]["result"]

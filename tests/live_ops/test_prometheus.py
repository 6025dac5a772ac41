"""A real Prometheus scrapes the admin listener and sees the configured split in `rate()`.

Needs the `prometheus` binary (Debian's package; .ci/run installs it): tests/support/prometheus.py.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.prometheus import Prometheus, Traffic
from tests.support.servers import Named, wait_until

QUERY = "sum by (upstream) (rate(strangler_requests_total[1m]))"
LEGACY_PERCENT = 25


def test_prometheus_sees_the_split_in_rate(tmp_path: Path, start_upstream, start_proxy) -> None:
    legacy, orders = start_upstream(Named("legacy")), start_upstream(Named("orders"))
    proxy = start_proxy(f"""
version: 1
upstreams:
  legacy: {{url: "{legacy.url}"}}
  orders: {{url: "{orders.url}"}}
routes:
  - name: orders
    match: {{path: /orders}}
    split: {{legacy: {LEGACY_PERCENT}, orders: {100 - LEGACY_PERCENT}}}
    sticky: none
""")
    prometheus = Prometheus(tmp_path, f"127.0.0.1:{proxy.admin_port}").start()
    try:
        with Traffic(proxy.url) as traffic:
            rates: dict[str, float] = {}

            def enough() -> bool:
                # Both series, and over enough requests (at least ~1000 in the window) for the ratio to mean something.
                rates.clear()
                for series in prometheus.query(QUERY):
                    rates[series["metric"].get("upstream", "")] = float(series["value"][1])
                return set(rates) == {"legacy", "orders"} and sum(rates.values()) * 60 >= 1000

            wait_until(enough, timeout_s=60, interval_s=0.5, what=f"prometheus to answer {QUERY}")
        assert traffic.errors == []
        share = 100 * rates["legacy"] / (rates["legacy"] + rates["orders"])
        assert abs(share - LEGACY_PERCENT) <= 8, f"prometheus sees legacy at {share:.1f}% ({rates}), the file says 25%"
        assert prometheus.target_health() == ["up"]
    finally:
        prometheus.stop()
    assert prometheus.process is not None and prometheus.process.returncode == 0
    assert proxy.terminate() == 0

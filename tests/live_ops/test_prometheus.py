"""A real Prometheus scrapes the admin listener and sees the configured split in `rate()`.

Needs the `prometheus` binary (Debian's package; .ci/run installs it): tests/support/prometheus.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from pathlib import Path

import aiohttp

from tests.support.prometheus import Prometheus
from tests.support.servers import Named, wait_until

QUERY = "sum by (upstream) (rate(strangler_requests_total[1m]))"
LEGACY_PERCENT = 25


class Traffic:
    """A few clients sending GET /orders until stopped."""

    def __init__(self, url: str, clients: int = 4) -> None:
        self.url = url + "/orders"
        self.clients = clients
        self.served: Counter[str] = Counter()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            async def client() -> None:
                while not self._stop.is_set():
                    try:
                        async with session.get(self.url) as response:
                            if response.status != 200:
                                self.errors.append(f"{response.status}")
                            self.served[await response.text()] += 1
                    except aiohttp.ClientError as error:
                        self.errors.append(repr(error))

            await asyncio.gather(*(client() for _ in range(self.clients)))

    def __enter__(self) -> "Traffic":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=20)


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

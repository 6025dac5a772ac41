"""A real Prometheus scrapes the admin listener and sees the configured split in `rate()`.

Needs the `prometheus` binary (Debian's package; .ci/run installs it). It runs
with a temporary config and TSDB, on a free loopback port, and is stopped at
the end of the test.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import threading
from collections import Counter
from pathlib import Path

import aiohttp
import httpx
import pytest

from tests.support.servers import Named, free_port, wait_until

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


class Prometheus:
    def __init__(self, workdir: Path, target: str) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.skip("the `prometheus` binary is not on PATH (Debian: apt-get install prometheus; .ci/run does)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        config.write_text(f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: strangler
    scrape_interval: 1s
    scrape_timeout: 1s
    static_configs:
      - targets: ["{target}"]
""")
        self.log_path = workdir / "prometheus.log"
        self.args = [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                     f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "Prometheus":
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(self._ready, timeout_s=30, what=f"prometheus ready (log: {self.log_path})")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"prometheus exited with {self.process.returncode}: {self.log_path.read_text()}")
        try:
            return httpx.get(self.url + "/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, promql: str) -> list[dict]:
        response = httpx.get(self.url + "/api/v1/query", params={"query": promql}, timeout=5)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]["result"]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log.close()


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
        targets = httpx.get(prometheus.url + "/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        assert [target["health"] for target in targets] == ["up"]
    finally:
        prometheus.stop()
    assert prometheus.process is not None and prometheus.process.returncode == 0
    assert proxy.terminate() == 0

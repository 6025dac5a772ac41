"""Overload: upstreams slower than the offered load. Bulkheads and limits.max_concurrent_requests
shed with 503 at once, memory stays bounded, and the admin listener keeps answering meanwhile.

The slowness is the toxiproxy's latency (every answer waits 0.5 s); the load is
hundreds of keep-alive connections sending back to back for a few seconds.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import pytest

from tests.hardening.conftest import Rig
from tests.support.faults import RecordingUpstream
from tests.support.metrics import scrape
from tests.support.servers import ProxyProcess
from tests.support.toxiproxy import Latency

LATENCY_S = 0.5
BULKHEAD = 16
GLOBAL_LIMIT = 40
RSS_GROWTH_LIMIT = 20 * 1024 * 1024
LOAD_S = 1.5


@dataclass
class Load:
    statuses: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    shed_seconds: list[float] = field(default_factory=list)      # how long each 503 took
    errors: Counter = field(default_factory=Counter)


async def _client(port: int, path: str, until: float, load: Load) -> None:
    reader = writer = None
    try:
        while time.monotonic() < until:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            started = time.monotonic()
            writer.write(f"GET {path} HTTP/1.1\r\nHost: shop.test\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            lower = head.lower()
            length = int(lower.split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
            body = await reader.readexactly(length)
            status = int(head[9:12])
            load.statuses[status] += 1
            if status == 503:
                load.shed_seconds.append(time.monotonic() - started)
                load.reasons[json.loads(body)["reason"]] += 1
                assert b"retry-after:" in lower
            if b"connection: close" in lower:
                writer.close()
                writer = None
    except (ConnectionError, asyncio.IncompleteReadError) as error:
        load.errors[type(error).__name__] += 1
    finally:
        if writer is not None:
            writer.close()


def _offer(port: int, path: str, clients: int, seconds: float) -> Load:
    load = Load()

    async def run() -> None:
        until = time.monotonic() + seconds
        await asyncio.gather(*(_client(port, path, until, load) for _ in range(clients)))

    asyncio.run(run())
    return load


class AdminProbe:
    """Polls the admin listener from its own thread while the load runs."""

    def __init__(self, proxy: ProxyProcess, upstream: str) -> None:
        self.proxy, self.upstream = proxy, upstream
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.max_inflight = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.proxy.admin_url, timeout=5) as client:
            while not self._stop.wait(0.05):
                for path in ("/health/live", "/health/ready"):
                    started = time.monotonic()
                    try:
                        status = client.get(path).status_code
                    except httpx.HTTPError as error:
                        self.failures.append(f"{path}: {error!r}")
                        continue
                    self.latencies.append(time.monotonic() - started)
                    if status != 200:
                        self.failures.append(f"{path}: {status}")
                try:
                    inflight = scrape(self.proxy.admin_url).value("strangler_inflight_requests",
                                                                  upstream=self.upstream)
                    self.max_inflight = max(self.max_inflight, inflight)
                except httpx.HTTPError as error:
                    self.failures.append(f"/metrics: {error!r}")

    def __enter__(self) -> "AdminProbe":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class Slow:
    def __init__(self, proxy: ProxyProcess, upstream: RecordingUpstream) -> None:
        self.proxy, self.upstream = proxy, upstream


@pytest.fixture(scope="module")
def slow(rig: Rig) -> Slow:
    upstream = rig.upstream()
    toxiproxy = rig.toxiproxy(upstream, name="slow")
    toxiproxy.add(Latency(seconds=LATENCY_S))
    proxy = rig.proxy(f"""
version: 1
upstreams:
  narrow: {{url: "{toxiproxy.url}", timeout: 5s, max_concurrent: {BULKHEAD}}}
  wide: {{url: "{toxiproxy.url}", timeout: 5s, max_concurrent: 100000}}
limits: {{max_concurrent_requests: {GLOBAL_LIMIT}}}
defaults:
  retry: {{attempts: 1}}
routes:
  - name: narrow
    match: {{path: /narrow}}
    to: narrow
  - name: wide
    match: {{path: /wide}}
    to: wide
""")
    return Slow(proxy, upstream)


@pytest.mark.parametrize("path,upstream,limit,reason", [
    ("/narrow", "narrow", BULKHEAD, "bulkhead_full"),
    ("/wide", "wide", GLOBAL_LIMIT, "overloaded"),
], ids=["bulkhead", "global-limit"])
def test_overload_is_shed_with_503_at_once_and_admin_keeps_answering(slow: Slow, path, upstream, limit, reason):
    before = slow.upstream.count
    with AdminProbe(slow.proxy, upstream) as probe:
        load = _offer(slow.proxy.port, path, clients=150, seconds=LOAD_S)
    served = load.statuses[200]
    assert set(load.statuses) <= {200, 503}, load.statuses
    assert load.errors == Counter(), load.errors
    assert load.statuses[503] > served, "the load did not exceed the limit: nothing was shed"
    assert load.reasons == Counter({reason: load.statuses[503]})
    # Shed at once (the upstream takes 0.5 s), and never more in flight than the limit allows.
    assert sorted(load.shed_seconds)[int(len(load.shed_seconds) * 0.99)] < LATENCY_S / 2
    assert probe.max_inflight <= limit
    assert served <= limit * (LOAD_S / LATENCY_S + 2)
    assert slow.upstream.count - before == served
    # The admin listener answered throughout.
    assert probe.failures == [] and len(probe.latencies) >= 6
    assert max(probe.latencies) < 1.0, max(probe.latencies)
    assert scrape(slow.proxy.admin_url).value("strangler_inflight_requests", upstream=upstream) == 0
    assert httpx.get(slow.proxy.url + path, timeout=5).status_code == 200


def test_memory_stays_bounded_under_sustained_overload(slow: Slow):
    _offer(slow.proxy.port, "/wide", clients=100, seconds=0.5)          # warm up: pools, caches, metrics
    start = slow.proxy.rss_bytes()
    statuses = Counter()
    for _ in range(2):
        statuses.update(_offer(slow.proxy.port, "/wide", clients=300, seconds=1.0).statuses)
    end = slow.proxy.rss_bytes()
    assert statuses[503] > 1000, statuses
    assert end - start < RSS_GROWTH_LIMIT, f"RSS grew {(end - start) / 2**20:.1f} MiB (from {start / 2**20:.1f} MiB)"

"""The process side of operations: `--workers 2` adds up its metrics and reloads in every worker; SIGTERM drains."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
import threading
from collections import Counter
from pathlib import Path

import aiohttp
from prometheus_client.multiprocess import MultiProcessCollector

from tests.support.configs import catch_all
from tests.support.metrics import routes, scrape
from tests.support.servers import GetInThread, Named, ProxyProcess, refused, wait_until


def split_config(old_url: str, new_url: str, old_percent: int) -> str:
    return f"""
version: 1
upstreams:
  old: {{url: "{old_url}"}}
  new: {{url: "{new_url}"}}
routes:
  - name: all
    match: {{path: /}}
    split: {{old: {old_percent}, new: {100 - old_percent}}}
    sticky: none
"""


def send_on_fresh_connections(url: str, count: int, concurrency: int = 8) -> Counter[str]:
    """`count` GETs, each on a new connection (so the kernel hands each to whichever worker accepts)."""
    served: Counter[str] = Counter()

    async def run() -> None:
        remaining = iter(range(count))
        connector = aiohttp.TCPConnector(force_close=True, limit=concurrency)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:
            async def worker() -> None:
                for _ in remaining:
                    async with session.get(url + "/x") as response:
                        assert response.status == 200, await response.text()
                        served[await response.text()] += 1

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    asyncio.run(run())
    return served


_FILE = re.compile(r"(?P<kind>[a-z_]+)_(?P<pid>\d+)\.db")


def per_process(metrics_dir: Path, kind: str, name: str, **labels: str) -> dict[int, float]:
    """The value of `name` in each process's own file (prometheus-client multiprocess mode: one file per pid)."""
    values: dict[int, float] = {}
    for path in metrics_dir.glob(f"{kind}_*.db"):
        found = _FILE.fullmatch(path.name)
        if not found:
            continue
        total = 0.0
        for metric in MultiProcessCollector.merge([str(path)], accumulate=True):
            for sample in metric.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        values[int(found["pid"])] = total
    return values


def test_workers_add_up_metrics_and_all_reload(tmp_path: Path, start_upstream) -> None:
    old, new = start_upstream(Named("old")), start_upstream(Named("new"))
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    path = tmp_path / "routes.yaml"
    path.write_text(split_config(old.url, new.url, 50))
    proxy = ProxyProcess(path, "--workers", "2", env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}).start()
    try:
        # The parent is ready before its workers have started: send batches until both have served some.
        before_reload: Counter[str] = Counter()

        def served_by_both_workers() -> bool:
            before_reload.update(send_on_fresh_connections(proxy.url, 100))
            counted = per_process(metrics_dir, "counter", "strangler_requests_total")
            return len([pid for pid, value in counted.items() if value and pid != proxy.pid]) == 2

        wait_until(served_by_both_workers, timeout_s=15, what="both workers to serve requests")
        first = sum(before_reload.values())
        assert set(before_reload) == {"old", "new"}
        wait_until(lambda: scrape(proxy.admin_url).value("strangler_requests_total") == first, timeout_s=5,
                   what=f"/metrics to count {first} requests across workers")
        counted = per_process(metrics_dir, "counter", "strangler_requests_total")
        workers = {pid for pid, value in counted.items() if value}
        assert len(workers) == 2 and proxy.pid not in workers, counted
        assert sum(counted[pid] for pid in workers) == first

        text = split_config(old.url, new.url, 0)
        temp = path.with_name("routes.yaml.tmp")
        temp.write_text(text)
        os.replace(temp, path)
        version = hashlib.sha256(text.encode()).hexdigest()
        wait_until(lambda: routes(proxy.admin_url)["version"] == version, timeout_s=5, what="the parent to reload")

        def every_worker_reloaded() -> bool:
            info = per_process(metrics_dir, "gauge_livemax", "strangler_config_info", version=version)
            return all(info.get(pid) == 1 for pid in workers)

        wait_until(every_worker_reloaded, timeout_s=5, what="both workers to load the new version")

        before = per_process(metrics_dir, "counter", "strangler_requests_total")
        second = 300
        served = send_on_fresh_connections(proxy.url, second)
        assert served == {"new": second}
        total = first + second
        wait_until(lambda: scrape(proxy.admin_url).value("strangler_requests_total") == total, timeout_s=5,
                   what=f"/metrics to count {total} requests across workers")
        after = per_process(metrics_dir, "counter", "strangler_requests_total")
        assert all(after[pid] > before[pid] for pid in workers), (before, after)   # both served the new split
        metrics = scrape(proxy.admin_url)
        assert metrics.value("strangler_requests_total", upstream="old", code="200") == before_reload["old"]
        assert metrics.value("strangler_requests_total", upstream="new", code="200") == before_reload["new"] + second
    finally:
        assert proxy.terminate() == 0


class SlowUpstream:
    """GET /slow: received, then holds its answer until the test releases it; then a 1 MiB body."""

    BODY = bytes(range(256)) * 4096

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.release = threading.Event()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        self.arrived.set()
        await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 20)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(self.BODY)).encode())]})
        for start in range(0, len(self.BODY), 64 * 1024):
            await send({"type": "http.response.body", "body": self.BODY[start:start + 64 * 1024], "more_body": True})
        await send({"type": "http.response.body", "body": b""})


def test_sigterm_finishes_requests_in_flight_and_exits_0(start_upstream, start_proxy) -> None:
    slow_app = SlowUpstream()
    upstream = start_upstream(slow_app)
    proxy = start_proxy(catch_all(upstream.url))
    get = GetInThread(proxy.url + "/slow")
    try:
        wait_until(slow_app.arrived.is_set, timeout_s=5, what="the request to reach the upstream")
        proxy.process.send_signal(signal.SIGTERM)
        wait_until(lambda: refused(proxy.port), timeout_s=5, what="the public port to refuse new connections")
        assert proxy.process.poll() is None, "exited with a request in flight"
    finally:
        slow_app.release.set()
        get.join()
    response = get.response()
    assert response.status_code == 200
    assert response.content == SlowUpstream.BODY
    assert proxy.process.wait(timeout=15) == 0
    assert proxy.terminate() == 0

"""A real Prometheus on loopback that scrapes the proxy's admin listener, and traffic for it to see.

Needs the `prometheus` binary (Debian's package; .ci/run installs it): a test that
starts one without it is skipped, with the command that installs it.
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

from tests.support.servers import free_port, wait_until


class Traffic:
    """A few clients sending GET requests to `paths` (one path per client, in turn) until stopped."""

    def __init__(self, url: str, clients: int = 4, paths: tuple[str, ...] = ("/orders",)) -> None:
        self.urls = [url + path for path in paths]
        self.clients = clients
        self.served: Counter[str] = Counter()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            async def client(index: int) -> None:
                url = self.urls[index % len(self.urls)]
                while not self._stop.is_set():
                    try:
                        async with session.get(url) as response:
                            if response.status != 200:
                                self.errors.append(f"{response.status}")
                            self.served[await response.text()] += 1
                    except aiohttp.ClientError as error:
                        self.errors.append(repr(error))

            await asyncio.gather(*(client(index) for index in range(self.clients)))

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

"""A real Prometheus (Debian's package; .ci/run installs it) scraping loopback targets every second.

It runs with a temporary config and TSDB on a free loopback port, and is
stopped by `stop()`. Without the binary, the test that asks for it is skipped.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.servers import free_port, wait_until

INSTALL = "apt-get install prometheus; .ci/run does"


class Prometheus:
    def __init__(self, workdir: Path, *targets: str, scrape_interval: str = "1s") -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.skip(f"the `prometheus` binary is not on PATH (Debian: {INSTALL})")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        listed = ", ".join(f'"{target}"' for target in targets)
        config.write_text(f"""
global:
  scrape_interval: {scrape_interval}
  evaluation_interval: {scrape_interval}
scrape_configs:
  - job_name: strangler
    scrape_interval: {scrape_interval}
    scrape_timeout: {scrape_interval}
    static_configs:
      - targets: [{listed}]
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

    def target_health(self) -> list[str]:
        targets = httpx.get(self.url + "/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        return [target["health"] for target in targets]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log.close()

"""A real Prometheus (Debian's package; .ci/run installs it) scraping loopback targets every second.

It runs with a temporary config and TSDB on a free loopback port, and is
stopped by `stop()`. Without the binary, the test that asks for it is skipped.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.servers import answers_200, free_port, stop_process, wait_until

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
        return answers_200(self.process, self.url + "/-/ready", self.log_path, "prometheus")

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
        stop_process(self.process, timeout_s=15)
        self._log.close()

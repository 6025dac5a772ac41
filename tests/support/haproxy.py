"""HAProxy (Debian's package; .ci/run installs it) balancing round-robin over proxy instances on loopback.

Each instance is health-checked on its admin listener's /health/ready every
200 ms (down after 2 failures, up after 2 passes), and every answer says which
instance gave it in `X-Instance`. Without the binary, the test that asks for it
is skipped.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.servers import free_port, stop_process, wait_until

INSTALL = "apt-get install haproxy; .ci/run does"


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or next((path for path in ("/usr/sbin/haproxy",) if Path(path).exists()), None)


class HAProxy:
    def __init__(self, workdir: Path, instances: dict[str, tuple[int, int]]) -> None:
        """`instances`: name -> (public port, admin port)."""
        binary = haproxy_binary()
        if binary is None:
            pytest.skip(f"the `haproxy` binary is not installed (Debian: {INSTALL})")
        self.port, self.stats_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        servers = "\n".join(f"    server {name} 127.0.0.1:{port} check port {admin}"
                            for name, (port, admin) in instances.items())
        config = workdir / "haproxy.cfg"
        config.write_text(f"""
global
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout check 1s
    option redispatch
    retries 3

frontend public
    bind 127.0.0.1:{self.port}
    default_backend instances

backend instances
    balance roundrobin
    option httpchk GET /health/ready
    http-check expect status 200
    default-server inter 200ms fall 2 rise 2
    http-response set-header X-Instance %[srv_name]
{servers}

listen stats
    bind 127.0.0.1:{self.stats_port}
    stats enable
    stats uri /stats
""")
        self.log_path = workdir / "haproxy.log"
        check = subprocess.run([binary, "-c", "-f", str(config)], capture_output=True, text=True, timeout=20)
        assert check.returncode == 0, f"haproxy refused its config:\n{check.stdout}{check.stderr}"
        self.args = [binary, "-db", "-f", str(config)]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "HAProxy":
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: self._states() is not None, timeout_s=15, what=f"haproxy up (log: {self.log_path})")
        return self

    def _states(self) -> dict[str, str] | None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"haproxy exited with {self.process.returncode}: {self.log_path.read_text()}")
        try:
            response = httpx.get(f"http://127.0.0.1:{self.stats_port}/stats;csv", timeout=2)
        except httpx.HTTPError:
            return None
        rows = csv.DictReader(io.StringIO(response.text.lstrip("# ")))
        return {row["svname"]: row["status"] for row in rows
                if row["pxname"] == "instances" and row["svname"] not in ("FRONTEND", "BACKEND")}

    def states(self) -> dict[str, str]:
        """Each instance's state as HAProxy sees it: UP, DOWN, UP 1/2 (going down), ..."""
        return self._states() or {}

    def wait_for(self, name: str, state: str, timeout_s: float = 15.0) -> None:
        wait_until(lambda: self.states().get(name) == state, timeout_s=timeout_s, interval_s=0.05,
                   what=f"haproxy to see {name} {state} (it sees {self.states()})")

    def stop(self) -> None:
        stop_process(self.process)
        if self.process is not None:
            self._log.close()

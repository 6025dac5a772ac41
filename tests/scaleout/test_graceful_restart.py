"""Restarting behind a balancer: on SIGTERM /health/ready answers 503 for --shutdown-delay while the instance still
serves new connections; only then does the listener close, the requests in flight finish, and it exits 0."""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from tests.support.configs import catch_all
from tests.support.servers import Named, ProxyProcess, refused, wait_until


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_says_unready_while_serving_then_closes_drains_and_exits_0(start_upstream, start_proxy,
                                                                            workers: str) -> None:
    upstream = start_upstream(Named("legacy"))
    proxy: ProxyProcess = start_proxy(catch_all(upstream.url), "--shutdown-delay", "2s", "--workers", workers)
    assert httpx.get(proxy.admin_url + "/health/ready", timeout=5).status_code == 200
    # With workers, ready comes as the parent has the config; the workers may still be starting.
    for _ in range(4):
        assert httpx.get(proxy.url + "/x", timeout=10).text == "legacy"
    assert proxy.process is not None
    proxy.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()

    def draining() -> bool:
        answer = httpx.get(proxy.admin_url + "/health/ready", timeout=2)
        return answer.status_code == 503 and answer.json()["status"] == "draining"

    wait_until(draining, timeout_s=1.5, what="/health/ready to say 503")
    served = 0
    while time.monotonic() - signalled < 1.6:
        # New connections, as a balancer that has not yet seen the 503 would open.
        with httpx.Client(timeout=5) as client:
            assert client.get(proxy.url + "/x").text == "legacy"
        assert httpx.get(proxy.admin_url + "/health/live", timeout=2).status_code == 200
        served += 1
        time.sleep(0.05)
    assert served >= 3
    wait_until(lambda: refused(proxy.port), timeout_s=5, what="the listener to close after the delay")
    assert time.monotonic() - signalled >= 2
    assert proxy.process.wait(timeout=15) == 0
    assert "strangler.draining ready=503 for=2s" in proxy.log()

"""Circuit breakers against real failing upstreams: open, fallback, half-open trials, no retry into an open breaker."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.support.configs import one_route
from tests.support.faults import ResetMidResponse, Scripted, eventually, faults  # noqa: F401  (fixture)
from tests.support.metrics import breaker_state, scrape
from tests.support.servers import wait_until


def test_open_breaker_sends_the_next_100_to_the_fallback_and_none_to_the_broken_upstream(start_proxy, faults):
    broken = faults(Scripted(then=503))
    legacy = faults(Scripted(body=b"legacy"))
    proxy = start_proxy(one_route(broken.url, legacy.url, fallback=True, path="/api/orders",
                                  retry="{attempts: 1}",
                                  circuit_breaker="{failure_threshold: 5, recovery_timeout: 60s, success_threshold: 2}"))
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        for _ in range(5):
            # Each failure is still answered, by the fallback (the GET is replayable).
            response = client.get("/api/orders/1")
            assert response.status_code == 200
            assert response.headers["x-strangler-upstream"] == "legacy"
        assert broken.count == 5
        assert breaker_state(proxy.admin_url, "orders", "new") == "open"

        for i in range(100):
            response = client.get(f"/api/orders/{i}")
            assert response.status_code == 200
            assert response.headers["x-strangler-upstream"] == "legacy"
            assert response.text == "legacy"

    assert broken.count == 5, "the open breaker let requests through to the broken upstream"
    assert legacy.count == 105
    metrics = scrape(proxy.admin_url)
    assert metrics.value("strangler_fallbacks_total", route="orders", from_upstream="new", to_upstream="legacy",
                         reason="circuit_open") == 100
    assert metrics.value("strangler_fallbacks_total", route="orders", reason="http_5xx") == 5
    assert metrics.value("strangler_circuit_breaker_state", route="orders", upstream="new") == 2
    assert metrics.value("strangler_circuit_breaker_state", route="orders", upstream="legacy") == 0
    assert metrics.value("strangler_circuit_breaker_transitions_total", route="orders", upstream="new", to="open") == 1
    assert metrics.value("strangler_upstream_attempts_total", route="orders", upstream="new", outcome="http_5xx") == 5
    assert breaker_state(proxy.admin_url, "orders", "new") == "open"


@pytest.mark.parametrize("with_fallback", [False, True], ids=["no-fallback", "fallback"])
async def test_half_open_lets_exactly_success_threshold_trials_through(start_proxy, faults, with_fallback):
    # Three failures open the breaker; later requests are held so the trials stay in flight.
    new = faults(Scripted([503, 503, 503], then=200, hold_from=3))
    legacy = faults(Scripted(body=b"legacy"))
    proxy = start_proxy(one_route(new.url, legacy.url, fallback=with_fallback, retry="{attempts: 1}",
                                  circuit_breaker="{failure_threshold: 3, recovery_timeout: 500ms, success_threshold: 2}"))
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        for _ in range(3):
            client.get("/")
    assert new.count == 3
    assert breaker_state(proxy.admin_url, "orders", "new") == "open"
    wait_until(lambda: breaker_state(proxy.admin_url, "orders", "new") == "half_open", timeout_s=5,
               what="breaker half-open")

    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=proxy.url, timeout=15, limits=limits) as client:
        tasks = [asyncio.create_task(client.get(f"/item/{i}")) for i in range(50)]
        await eventually(lambda: sum(task.done() for task in tasks) >= 48, what="48 answered without the upstream")
        # The two trials are held by the upstream; everything else was turned away without reaching it.
        await eventually(lambda: new.count == 5, what="two trials at the upstream")
        assert sum(task.done() for task in tasks) == 48
        assert new.count == 5
        new.release()
        responses = await asyncio.gather(*tasks)

    assert new.count == 5, "more trial requests than success_threshold reached the half-open upstream"
    trials = [r for r in responses if r.status_code == 200 and r.headers["x-strangler-upstream"] == "new"]
    others = [r for r in responses if r not in trials]
    assert len(trials) == 2
    assert len(others) == 48
    for response in others:
        if with_fallback:
            assert response.status_code == 200
            assert response.headers["x-strangler-upstream"] == "legacy"
            continue
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert int(response.headers["retry-after"]) >= 1
        problem = response.json()
        assert problem["reason"] == "circuit_open"
        assert problem["status"] == 503
        assert problem["route"] == "orders"
        assert problem["upstream"] == "new"
    # Both trials succeeded: the breaker closed again.
    assert breaker_state(proxy.admin_url, "orders", "new") == "closed"
    metrics = scrape(proxy.admin_url)
    assert metrics.value("strangler_circuit_breaker_state", route="orders", upstream="new") == 0
    assert metrics.value("strangler_circuit_breaker_transitions_total", route="orders", upstream="new",
                         to="half_open") == 1
    assert metrics.value("strangler_circuit_breaker_transitions_total", route="orders", upstream="new",
                         to="closed") == 1
    assert metrics.value("strangler_upstream_attempts_total", route="orders", upstream="new", outcome="ok") == 2
    assert metrics.value("strangler_fallbacks_total", route="orders", reason="circuit_open") == (
        48 if with_fallback else 0)


def test_a_retry_is_not_sent_once_the_failures_opened_the_breaker(start_proxy, faults):
    broken = faults(Scripted(then=503))
    proxy = start_proxy(one_route(broken.url,
                                  defaults={"retry": "{attempts: 3, backoff: {initial: 10ms, max: 50ms}}"},
                                  circuit_breaker="{failure_threshold: 2, recovery_timeout: 60s}"))
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        response = client.get("/")
        # The second attempt opened the breaker: no third attempt, the upstream's answer as it is.
        assert response.status_code == 503
        assert response.headers["x-upstream-own"] == "503"
        assert broken.count == 2
        refused = client.get("/")
    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["reason"] == "circuit_open"
    assert broken.count == 2
    metrics = scrape(proxy.admin_url)
    assert metrics.value("strangler_retries_total", route="orders", upstream="new") == 1
    assert metrics.value("strangler_upstream_attempts_total", route="orders", upstream="new") == 2


async def test_a_retry_waiting_out_its_backoff_is_not_sent_when_the_breaker_opened_meanwhile(start_proxy, faults):
    broken = faults(Scripted(then=503))
    legacy = faults(Scripted(body=b"legacy"))
    # A long backoff keeps the first request's retry waiting while a second request opens the breaker.
    proxy = start_proxy(one_route(broken.url, legacy.url, fallback=True,
                                  retry="{attempts: 3, backoff: {initial: 700ms, max: 1s}}",
                                  circuit_breaker="{failure_threshold: 2, recovery_timeout: 60s}"))

    def failed_attempts() -> float:
        return scrape(proxy.admin_url).value("strangler_upstream_attempts_total", route="orders", upstream="new",
                                             outcome="http_5xx")

    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        first = asyncio.create_task(client.get("/first"))
        await eventually(lambda: failed_attempts() == 1, what="the first attempt's failure")
        assert not first.done()
        second = await client.get("/second")
        # Its own attempt opened the breaker: no retry, the fallback answered.
        assert second.status_code == 200
        assert second.headers["x-strangler-upstream"] == "legacy"
        assert breaker_state(proxy.admin_url, "orders", "new") == "open"
        response = await first

    assert response.status_code == 200
    assert response.headers["x-strangler-upstream"] == "legacy"
    assert broken.count == 2, "a retry went to an upstream whose breaker was open"
    metrics = scrape(proxy.admin_url)
    assert metrics.value("strangler_upstream_attempts_total", route="orders", upstream="new") == 2
    assert metrics.value("strangler_fallbacks_total", route="orders", reason="circuit_open") == 1
    assert metrics.value("strangler_fallbacks_total", route="orders", reason="http_5xx") == 1


def test_an_upstream_that_dies_mid_body_opens_its_breaker(start_proxy, faults):
    """Success is counted when the body ends whole: failures after the headers count too."""
    dying = faults(ResetMidResponse(resets=1000))
    proxy = start_proxy(one_route(dying.url, name="reports", retry="{attempts: 1}",
                                  circuit_breaker="{failure_threshold: 3, recovery_timeout: 60s}"))
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        for _ in range(3):
            with pytest.raises(httpx.HTTPError):
                client.get("/report").read()
        assert breaker_state(proxy.admin_url, "reports", "new") == "open"
        refused = client.get("/report")
    assert refused.status_code == 503
    assert refused.json()["reason"] == "circuit_open"
    assert dying.count == 3

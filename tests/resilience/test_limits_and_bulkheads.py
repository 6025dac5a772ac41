"""Bulkheads, timeouts and broken connections against real misbehaving upstreams."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.support.configs import one_route
from tests.support.faults import (  # noqa: F401  (faults: fixture)
    Hanging, RefusedPort, ResetBeforeAnswer, ResetMidResponse, Scripted, eventually, faults,
)
from tests.support.metrics import scrape


def _assert_problem(response: httpx.Response, status: int, reason: str, upstream: str | None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    assert problem["reason"] == reason
    assert problem["upstream"] == upstream
    for key in ("type", "title", "detail", "route"):
        assert key in problem
    return problem


@pytest.mark.parametrize("with_fallback", [False, True], ids=["no-fallback", "fallback"])
async def test_bulkhead_refuses_the_request_past_max_concurrent_at_once(start_proxy, faults, with_fallback):
    hang = faults(Hanging())
    legacy = faults(Scripted(body=b"legacy"))
    proxy = start_proxy(one_route(hang.url, legacy.url, fallback=with_fallback,
                                  new_options="max_concurrent: 2, timeout: 20s", retry="{attempts: 1}"))
    async with httpx.AsyncClient(base_url=proxy.url, timeout=20) as client:
        held = [asyncio.create_task(client.get(f"/held/{i}")) for i in range(2)]
        await eventually(lambda: hang.count == 2, what="two requests at the hanging upstream")

        started = time.monotonic()
        third = await client.get("/third")
        elapsed = time.monotonic() - started
        assert elapsed < 2.0, f"the full bulkhead took {elapsed:.2f}s to refuse"   # the others hang for 20 s
        if with_fallback:
            assert third.status_code == 200
            assert third.headers["x-strangler-upstream"] == "legacy"
            assert third.text == "legacy"
        else:
            _assert_problem(third, 503, "bulkhead_full", "new")
            assert int(third.headers["retry-after"]) >= 1
        assert hang.count == 2

        metrics = scrape(proxy.admin_url)
        assert metrics.value("strangler_bulkhead_rejections_total", upstream="new") == 1
        assert metrics.value("strangler_inflight_requests", upstream="new") == 2
        assert metrics.value("strangler_fallbacks_total", route="orders", from_upstream="new", to_upstream="legacy",
                             reason="bulkhead_full") == (1 if with_fallback else 0)
        assert not any(task.done() for task in held)

        hang.release()
        for response in await asyncio.gather(*held):
            assert response.status_code == 200
            assert response.text == "released"
    assert scrape(proxy.admin_url).value("strangler_inflight_requests", upstream="new") == 0


def test_transport_failures_are_proxy_made_504_and_502_problems(start_proxy, faults):
    hang = faults(Hanging())
    hang_long = faults(Hanging())
    refused = faults(RefusedPort())
    proxy = start_proxy(f"""
version: 1
upstreams:
  hanging: {{url: "{hang.url}", timeout: 300ms}}
  hanging-long: {{url: "{hang_long.url}", timeout: 1s}}
  refused: {{url: "{refused.url}"}}
defaults:
  retry: {{attempts: 3, backoff: {{initial: 10ms, max: 50ms}}}}
routes:
  - {{name: upstream-timeout, match: {{path: /upstream-timeout}}, to: hanging}}
  - {{name: route-timeout, match: {{path: /route-timeout}}, to: hanging-long, timeout: 500ms}}
  - {{name: refused, match: {{path: /refused}}, to: refused}}
""")
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        # The upstream's timeout: each attempt waits 300 ms for an answer; a GET that timed out is retried.
        _assert_problem(client.get("/upstream-timeout"), 504, "timeout", "hanging")
        assert hang.count == 3

        # The route's timeout bounds all attempts together: three of 1 s each would take over 3 s.
        started = time.monotonic()
        response = client.get("/route-timeout")
        elapsed = time.monotonic() - started
        _assert_problem(response, 504, "timeout", "hanging-long")
        assert elapsed < 2.5, f"took {elapsed:.2f}s"
        assert hang_long.count == 1

        _assert_problem(client.get("/refused"), 502, "connect_error", "refused")

    metrics = scrape(proxy.admin_url)
    assert metrics.value("strangler_upstream_attempts_total", route="upstream-timeout", upstream="hanging",
                         outcome="timeout") == 3
    assert metrics.value("strangler_upstream_attempts_total", route="route-timeout", upstream="hanging-long",
                         outcome="timeout") == 1
    assert metrics.value("strangler_upstream_attempts_total", route="refused", upstream="refused",
                         outcome="connect_error") == 3


def test_slow_answers_within_the_read_timeout_pass_and_slower_ones_fall_back(start_proxy, faults):
    slowish = faults(Scripted(delay_s=0.1, body=b"slow but fine"))
    too_slow = faults(Scripted(delay_s=5.0, body=b"too late"))
    legacy = faults(Scripted(body=b"legacy"))
    proxy = start_proxy(f"""
version: 1
upstreams:
  slowish: {{url: "{slowish.url}", timeout: 1s}}
  too_slow: {{url: "{too_slow.url}", timeout: 300ms}}
  legacy: {{url: "{legacy.url}"}}
defaults:
  retry: {{attempts: 2, backoff: {{initial: 10ms, max: 50ms}}}}
routes:
  - name: fine
    match: {{path: /fine}}
    to: slowish
  - name: late
    match: {{path: /late}}
    to: too_slow
    fallback: legacy
""")
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        fine = client.get("/fine")
        assert fine.status_code == 200
        assert fine.text == "slow but fine"
        late = client.get("/late")
        # Both attempts timed out; a GET is safe to send to the fallback.
        assert late.status_code == 200
        assert late.headers["x-strangler-upstream"] == "legacy"
        # A POST that timed out may have been acted on: neither retried nor sent to the fallback.
        posted = client.post("/late", content=b"pay 10")
    _assert_problem(posted, 504, "timeout", "too_slow")
    assert slowish.count == 1
    assert too_slow.count == 3
    assert too_slow.methods() == ["GET", "GET", "POST"]
    assert legacy.count == 1
    metrics = scrape(proxy.admin_url)
    assert metrics.value("strangler_fallbacks_total", route="late", from_upstream="too_slow", to_upstream="legacy",
                         reason="timeout") == 1
    assert metrics.value("strangler_upstream_attempts_total", route="late", upstream="too_slow",
                         outcome="timeout") == 3


def test_reset_mid_response_aborts_the_clients_response(start_proxy, faults):
    servers = {
        "content-length": faults(ResetMidResponse(resets=1, chunked=False, length=10_000, sent=1_000)),
        "chunked": faults(ResetMidResponse(resets=1, chunked=True, sent=1_000)),
    }
    upstreams = "".join(f'  up-{name}: {{url: "{server.url}"}}\n' for name, server in servers.items())
    routes = "".join(f"  - {{name: {name}, match: {{path: /{name}}}, to: up-{name}}}\n" for name in servers)
    proxy = start_proxy(f"""
version: 1
upstreams:
{upstreams}defaults:
  retry: {{attempts: 3, backoff: {{initial: 10ms, max: 50ms}}}}
routes:
{routes}""")
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        for name, server in servers.items():
            with client.stream("GET", f"/{name}/big") as response:
                assert response.status_code == 200
                # Never a truncated body presented as complete.
                with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                    response.read()
            # The status was already sent: nothing could be retried.
            assert server.count == 1, name

            # The proxy (and its pool towards the upstream) still works.
            after = client.get(f"/{name}/next")
            assert after.status_code == 200
            assert after.text == "whole"
            assert server.count == 2


_RESET_CASES = {                 # route: (method, retry policy, times the upstream receives it)
    "get-default": ("GET", "{attempts: 3}", 3),               # connect-error covers a reset before any answer
    "get-once": ("GET", "{attempts: 1}", 1),                  # no retries at all
    "put-not-replayable": ("PUT", "{attempts: 3, methods: [GET]}", 1),
    "get-no-connect-error": ("GET", "{attempts: 3, retry_on: [timeout, 503]}", 1),
}


def test_a_reset_before_the_answer_is_replayed_only_as_the_retry_policy_says(start_proxy, faults):
    servers = {name: faults(ResetBeforeAnswer()) for name in _RESET_CASES}
    upstreams = "".join(f'  up-{name}: {{url: "{server.url}"}}\n' for name, server in servers.items())
    routes = "".join(f"  - {{name: {name}, match: {{path: /{name}}}, to: up-{name}, retry: {retry}}}\n"
                     for name, (_, retry, _) in _RESET_CASES.items())
    proxy = start_proxy(f"""
version: 1
upstreams:
{upstreams}routes:
{routes}""")
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        for name, (method, _, _) in _RESET_CASES.items():
            response = client.request(method, f"/{name}/7", content=b"x" if method == "PUT" else None)
            _assert_problem(response, 502, "upstream_reset", f"up-{name}")
    metrics = scrape(proxy.admin_url)
    for name, (method, _, expected) in _RESET_CASES.items():
        # The request may have reached the upstream: it is sent again only as the policy says, and
        # the HTTP client library must not resend it behind the proxy's back (uncounted).
        assert servers[name].count == expected, f"{name}: {method} received {servers[name].count} times"
        assert metrics.value("strangler_upstream_attempts_total", route=name, upstream=f"up-{name}",
                             outcome="upstream_reset") == expected

"""ServiceClient: the breaker, retry budget and timeouts the proxy uses too, for one service calling another."""

from __future__ import annotations

import asyncio

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from resilience.errors import CallFailed, CircuitOpen, Failure
from resilience.policy import BreakerPolicy, RetryPolicy
from resilience.service_client import ServiceClient
from tests.data.conftest import serving
from tests.support.servers import free_port

FAST_RETRY = RetryPolicy(attempts=3, backoff_initial_s=0.01, backoff_max_s=0.02)


class Flaky:
    """Answers 503 to the first `failures` requests, or sleeps `delay_s` once, then 200 with what it got."""

    def __init__(self, failures: int = 0, delay_s: float = 0.0) -> None:
        self.failures, self.delay_s = failures, delay_s
        self.seen: list[dict] = []

    async def endpoint(self, request: Request) -> JSONResponse:
        self.seen.append({"method": request.method, "key": request.headers.get("idempotency-key"),
                          "body": await request.body()})
        if self.failures > 0:
            self.failures -= 1
            return JSONResponse({"error": "unavailable", "detail": "busy"}, status_code=503)
        if self.delay_s:
            delay, self.delay_s = self.delay_s, 0.0
            await asyncio.sleep(delay)
        return JSONResponse({"attempts": len(self.seen)}, status_code=201 if request.method == "POST" else 200)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/thing/", self.endpoint, methods=["GET", "POST"])])


async def test_a_keyed_post_is_retried_and_an_unkeyed_one_is_not() -> None:
    flaky = Flaky(failures=2)
    with serving(flaky.app()) as server:
        client = ServiceClient("thing", server.url, retry=FAST_RETRY)
        try:
            assert await client.request_json("POST", "/thing/", json={"a": 1}, idempotency_key="k1") == \
                (201, {"attempts": 3})
            assert [seen["key"] for seen in flaky.seen] == ["k1"] * 3
            assert flaky.seen[0]["body"] == b'{"a":1}'
            flaky.failures = 1
            assert (await client.request_json("POST", "/thing/", json={"a": 1}))[0] == 503   # the answer, as it came
            assert len(flaky.seen) == 4
            flaky.failures = 1
            assert (await client.request_json("GET", "/thing/"))[0] == 200                  # GET is safe to repeat
        finally:
            await client.close()


async def test_a_timeout_is_retried_only_when_the_request_may_be_repeated() -> None:
    flaky = Flaky(delay_s=1.0)
    with serving(flaky.app()) as server:
        client = ServiceClient("thing", server.url, timeout_s=0.2, retry=FAST_RETRY)
        try:
            assert (await client.request_json("POST", "/thing/", json={}, idempotency_key="k2"))[0] == 201
            assert len(flaky.seen) == 2
            flaky.delay_s = 1.0
            with pytest.raises(CallFailed) as raised:
                await client.request_json("POST", "/thing/", json={})
            assert raised.value.reason is Failure.TIMEOUT and raised.value.reached_service
            assert len(flaky.seen) == 3
        finally:
            await client.close()


async def test_the_breaker_opens_and_refuses_calls_with_a_clear_error() -> None:
    outcomes: list[str] = []
    client = ServiceClient("nowhere", f"http://127.0.0.1:{free_port()}", connect_timeout_s=0.5,
                           retry=RetryPolicy(attempts=1), breaker=BreakerPolicy(failure_threshold=2),
                           on_attempt=outcomes.append)
    try:
        for _ in range(2):
            with pytest.raises(CallFailed) as raised:
                await client.request_json("GET", "/thing/")
            assert raised.value.reason is Failure.CONNECT_ERROR and not raised.value.reached_service
        with pytest.raises(CircuitOpen, match="circuit open for nowhere"):
            await client.request_json("GET", "/thing/")
        assert outcomes == ["connect_error", "connect_error", "circuit_open"]
    finally:
        await client.close()


async def test_paths_go_out_as_given_and_no_cookie_rides_on_the_next_call() -> None:
    seen: list[tuple[bytes, str | None]] = []

    async def endpoint(request: Request) -> JSONResponse:
        seen.append((request.scope["raw_path"], request.headers.get("cookie")))
        response = JSONResponse({})
        response.set_cookie("session", "alice")
        return response

    app = Starlette(routes=[Route("/{rest:path}", endpoint)])
    with serving(app) as server:
        client = ServiceClient("thing", server.url + "/base/")
        try:
            await client.request_json("GET", "/api/inventory/A%2FB/reserve/")
            await client.request_json("GET", "/a/../b/")
        finally:
            await client.close()
    assert seen == [(b"/base/api/inventory/A%2FB/reserve/", None), (b"/base/a/../b/", None)]

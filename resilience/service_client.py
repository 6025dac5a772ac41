"""A resilient JSON client for service-to-service calls: the only module of this library that imports httpx.

Every call passes the same CircuitBreaker, RetryBudget and call_with_retries that
guard the proxy's forwarded requests; failures are CircuitOpen or CallFailed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx

from .breaker import CircuitBreaker
from .budget import RetryBudget
from .errors import CallFailed, CircuitOpen, Failure
from .policy import BreakerPolicy, RetryPolicy
from .retry import call_with_retries

MAX_RESPONSE_BODY_BYTES = 1024 * 1024
# Below uvicorn's keep-alive timeout (5 s): a pooled connection is never one the service just closed.
KEEPALIVE_EXPIRY_S = 4.0
# Transport failures after which the request may have reached the service, and that a
# replay-safe request may therefore repeat (a connect failure never reached it at all).
_REPEATABLE = frozenset({Failure.TIMEOUT, Failure.UPSTREAM_RESET})
_CONNECT = frozenset({Failure.CONNECT_ERROR, Failure.CONNECT_TIMEOUT})

OnAttempt = Callable[[str], None]   # called with ok, http_5xx, connect_error, timeout, upstream_reset, ...


class ServiceClient:
    """JSON over HTTP to one service, with a breaker, a retry budget and per-attempt timeouts."""

    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        timeout_s: float = 5.0,
        connect_timeout_s: float = 1.0,
        retry: RetryPolicy = RetryPolicy(),
        breaker: BreakerPolicy = BreakerPolicy(),
        headers: Iterable[tuple[str, str]] = (),
        on_attempt: OnAttempt | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.retry = retry
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.breaker = CircuitBreaker(breaker, clock=clock, name=name)
        self.budget = RetryBudget(retry.budget_ratio, clock=clock)
        self._headers = list(headers)
        self._on_attempt = on_attempt
        self._origin = httpx.URL(self.base_url)
        self._prefix = self._origin.raw_path.rstrip(b"/")
        self._http: httpx.AsyncClient | None = None      # opened by the first call, in its event loop

    async def request_json(
        self,
        method: str,
        path: str,
        json: Any = None,
        idempotency_key: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> tuple[int, Any]:
        """Send one request, retried where that is safe; return (status, parsed JSON body or text).

        Raises CircuitOpen while the breaker refuses calls, and CallFailed for a transport
        failure that outlived its retries (`reached_service` says whether the outcome is unknown).
        """
        method = method.upper()
        body = None if json is None else _encode(json)
        request_headers = [("Accept", "application/json"), *self._headers, *headers]
        if body is not None:
            request_headers.append(("Content-Type", "application/json"))
        if idempotency_key is not None:
            request_headers.append(("Idempotency-Key", idempotency_key))
        # Repeating a request the service may have acted on is safe only when the method
        # says so, or when an idempotency key lets the service recognise the repeat.
        replay_safe = method in self.retry.methods or idempotency_key is not None
        self.budget.record_request()

        def should_retry(result: object | None, error: BaseException | None) -> bool:
            if error is not None:
                if not isinstance(error, CallFailed):
                    return False            # CircuitOpen, or a bug: nothing to gain by repeating
                if error.reason in _CONNECT:
                    wanted = self.retry.retry_on_connect_error
                elif error.reason is Failure.TIMEOUT:
                    wanted = self.retry.retry_on_timeout and replay_safe
                else:
                    wanted = error.reason in _REPEATABLE and replay_safe
            else:
                status = result[0]  # type: ignore[index]
                wanted = status in self.retry.retry_on_statuses and replay_safe
            return wanted and not self.breaker.is_open() and self.budget.try_spend()

        return await call_with_retries(
            lambda number: self._attempt(method, path, request_headers, body), self.retry, should_retry,
        )

    async def _attempt(self, method: str, path: str, headers: list[tuple[str, str]],
                       body: bytes | None) -> tuple[int, Any]:
        permit = self.breaker.try_acquire()
        if permit is None:
            self._count("circuit_open")
            raise CircuitOpen(f"circuit open for {self.name} ({self.base_url}): calls refused for "
                              f"{self.breaker.retry_after_s():g}s", service=self.name,
                              retry_after_s=self.breaker.retry_after_s())
        try:
            # httpx's own timeouts bound each read; this bounds the whole attempt,
            # so a service that trickles bytes cannot hold the caller forever.
            async with asyncio.timeout(self.connect_timeout_s + self.timeout_s):
                status, content_type, content = await self._exchange(method, path, headers, body)
        except (httpx.RequestError, TimeoutError) as exc:
            reason = _failure(exc)
            permit.record_failure()
            self._count(_outcome(reason))
            raise CallFailed(f"{reason.title}: {type(exc).__name__}: {exc}".rstrip(": "), service=self.name,
                             reason=reason) from None
        except CallFailed as error:
            permit.record_failure()
            self._count(_outcome(error.reason))
            raise
        except BaseException:
            permit.release()     # cancelled by our caller: not the service's fault
            raise
        if status >= 500:
            permit.record_failure()
            self._count("http_5xx")
        else:
            permit.record_success()
            self._count("ok")
        return status, _decode(content_type, content)

    async def _exchange(self, method: str, path: str, headers: list[tuple[str, str]],
                        body: bytes | None) -> tuple[int, str, bytes]:
        # The path goes out as given (httpx's "target" extension): httpx resolves dot segments
        # in any URL it builds, even one made with copy_with(raw_path=...).
        target = self._prefix + path.encode("latin-1")
        client = self._http or self._open()
        request = client.build_request(method, self._origin, headers=headers, content=body,
                                       extensions={"target": target})
        response = await client.send(request, stream=True)
        try:
            content = bytearray()
            async for chunk in response.aiter_bytes():
                content += chunk
                if len(content) > MAX_RESPONSE_BODY_BYTES:
                    raise CallFailed(f"{self.name} answered more than {MAX_RESPONSE_BODY_BYTES} bytes",
                                     service=self.name, reason=Failure.PROTOCOL_ERROR)
        finally:
            await response.aclose()
        return response.status_code, response.headers.get("content-type", ""), bytes(content)

    def _open(self) -> httpx.AsyncClient:
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout_s, connect=self.connect_timeout_s),
            # No waiting for a free connection: the caller bounds its own concurrency.
            limits=httpx.Limits(max_connections=None, keepalive_expiry=KEEPALIVE_EXPIRY_S),
            # Calls are made on the caller's own behalf: no cookie one answer set rides on the
            # next call, and no proxy or credentials come from the environment.
            cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])),
            trust_env=False,
        )
        return self._http

    def _count(self, outcome: str) -> None:
        if self._on_attempt is not None:
            self._on_attempt(outcome)

    async def close(self) -> None:
        if self._http is not None:
            client, self._http = self._http, None
            await client.aclose()

    def __repr__(self) -> str:
        return f"<ServiceClient {self.name} {self.base_url} {self.breaker!r}>"


def _failure(exc: BaseException) -> Failure:
    if isinstance(exc, httpx.ConnectTimeout):
        return Failure.CONNECT_TIMEOUT
    if isinstance(exc, httpx.ConnectError):
        return Failure.CONNECT_ERROR
    if isinstance(exc, httpx.PoolTimeout):
        return Failure.POOL_TIMEOUT
    if isinstance(exc, (httpx.TimeoutException, TimeoutError)):
        return Failure.TIMEOUT
    # httpx reports a service that closed the connection before its answer was whole as a
    # RemoteProtocolError too; between our own services that is a restart, not garbage.
    if isinstance(exc, (httpx.NetworkError, httpx.RemoteProtocolError)):
        return Failure.UPSTREAM_RESET
    return Failure.PROTOCOL_ERROR


def _outcome(reason: Failure) -> str:
    """The attempt's outcome as the proxy counts its own: both timeouts are `timeout`."""
    return "timeout" if reason is Failure.CONNECT_TIMEOUT else reason.flag


def _encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _decode(content_type: str, content: bytes) -> Any:
    """The body as JSON when it says so (None when empty), else as text."""
    if not content:
        return None
    if content_type.split(";")[0].strip().lower().endswith("json"):
        try:
            return json.loads(content)
        except ValueError:
            pass
    return content.decode("utf-8", errors="replace")

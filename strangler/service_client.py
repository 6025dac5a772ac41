"""A resilient JSON client for service-to-service calls, built from the proxy's own stages.

One library, not a copy: the connection pool is forward.UpstreamClient, failures are
the proxy's UpstreamError reasons, and every call passes the same CircuitBreaker,
RetryBudget and call_with_retries that guard proxied requests.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from .breaker import CircuitBreaker
from .budget import RetryBudget
from .config.model import BreakerPolicy, RetryPolicy, Upstream
from .errors import CircuitOpen, Reason, UpstreamError
from .forward import UpstreamClient, translate
from .retry import call_with_retries

MAX_RESPONSE_BODY_BYTES = 1024 * 1024
# Transport failures after which the request may have reached the service, and that a
# replay-safe request may therefore repeat (a connect failure never reached it at all).
_REPEATABLE_REASONS = frozenset({Reason.TIMEOUT, Reason.UPSTREAM_RESET})
_CONNECT_REASONS = frozenset({Reason.CONNECT_ERROR, Reason.CONNECT_TIMEOUT})

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
        self._client = UpstreamClient(Upstream(name=name, url=self.base_url, connect_timeout_s=connect_timeout_s,
                                               timeout_s=timeout_s))

    async def request_json(
        self,
        method: str,
        path: str,
        json: Any = None,
        idempotency_key: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> tuple[int, Any]:
        """Send one request, retried where that is safe; return (status, parsed JSON body or text).

        Raises CircuitOpen while the breaker refuses calls, and UpstreamError for a transport
        failure that outlived its retries (`reached_upstream` says whether the outcome is unknown).
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
                if not isinstance(error, UpstreamError):
                    return False            # CircuitOpen, or a bug: nothing to gain by repeating
                if error.reason in _CONNECT_REASONS:
                    wanted = self.retry.retry_on_connect_error
                elif error.reason is Reason.TIMEOUT:
                    wanted = self.retry.retry_on_timeout and replay_safe
                else:
                    wanted = error.reason in _REPEATABLE_REASONS and replay_safe
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
                              f"{self.breaker.retry_after_s():g}s", upstream=self.name,
                              retry_after_s=self.breaker.retry_after_s())
        try:
            # The pool's own timeouts bound each read; this bounds the whole attempt,
            # so a service that trickles bytes cannot hold the caller forever.
            async with asyncio.timeout(self.connect_timeout_s + self.timeout_s):
                status, content_type, content = await self._exchange(method, path, headers, body)
        except TimeoutError as exc:
            permit.record_failure()
            self._count("timeout")
            raise translate(exc, upstream=self.name) from None
        except UpstreamError as error:
            permit.record_failure()
            self._count("timeout" if error.reason is Reason.CONNECT_TIMEOUT else error.reason.flag)
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
        response = await self._client.send(method, path, headers, body)
        complete = False
        try:
            content = bytearray()
            async for chunk in response.chunks():
                content += chunk
                if len(content) > MAX_RESPONSE_BODY_BYTES:
                    raise UpstreamError(f"{self.name} answered more than {MAX_RESPONSE_BODY_BYTES} bytes",
                                        reason=Reason.PROTOCOL_ERROR, upstream=self.name)
            complete = True
        finally:
            response.finish(complete=complete)
        content_type = next((value.decode("latin-1") for name, value in response.raw_headers
                             if name.lower() == b"content-type"), "")
        return response.status, content_type, bytes(content)

    def _count(self, outcome: str) -> None:
        if self._on_attempt is not None:
            self._on_attempt(outcome)

    async def close(self) -> None:
        await self._client.close()

    def __repr__(self) -> str:
        return f"<ServiceClient {self.name} {self.base_url} {self.breaker!r}>"


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

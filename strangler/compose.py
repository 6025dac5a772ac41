"""Composite routes: one GET answered by several upstreams at once, as one JSON object keyed by part name.

    captures of match.path -> each part's target -> the parts fetched concurrently, each by a Forwarder
      (its upstream's bulkhead, breaker, retry budget and retries, as any request) -> each body read
      whole, bounded, and checked to be JSON -> one answer: {"order": {...}, "payment": null, "partial": [...]}

A part that is not required and fails is null in the answer, listed in "partial" with the reason
and in X-Strangler-Partial. A required part that fails decides the whole at once: its 4xx is the
whole's status, anything else a 502, 503 or 504 naming it; the parts still in flight are then
abandoned, which their upstreams' breakers do not count. The route's timeout is the deadline
for the whole, bodies included.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterable
from email.utils import formatdate
from typing import Any

from .body import RequestBody
from .config.compose import ANSWER_METHODS, PARTIAL_KEY
from .config.model import Part
from .errors import MethodNotAllowed, PartRefused, ProxyError, Reason, UpstreamError
from .forwarder import Forwarder
from .headers import Headers, RequestFraming
from .lease import UpstreamLease
from .outcome import PartOutcome, RequestTrace
from .recorder import Recorder
from .routing import RequestHead
from .runtime import RouteRuntime, Runtime

ALLOW = b"GET, HEAD"
# What describes the composite answer rather than its parts: each part is asked for its JSON
# whole, fresh and uncompressed, as the proxy reads it.
_NOT_FOR_PARTS = frozenset({b"accept", b"accept-encoding", b"range", b"if-range", b"if-match", b"if-none-match",
                            b"if-modified-since", b"if-unmodified-since"})
_ASKED_OF_PARTS = ((b"Accept", b"application/json"), (b"Accept-Encoding", b"identity"))
_NO_BODY = RequestFraming(None, False)
_WHY = {"not_json": "answered with a body that is not JSON", "too_large": "answered with a body over its limit"}


async def answer(runtime: Runtime, route_rt: RouteRuntime, head: RequestHead, headers: Headers, receive: Any,
                 send: Any, trace: RequestTrace, recorder: Recorder) -> None:
    """Fetch the route's parts and send the composite answer, or raise the refusal a required part decided."""
    route = route_rt.route
    if head.method not in ANSWER_METHODS:
        raise MethodNotAllowed(f"{route.name} is a composite route: GET and HEAD only", allow=ALLOW, route=route.name)
    captures = route.match.template.match(head.path) if route.match.template is not None else {}
    part_headers = [(name, value) for name, value in headers if name.lower() not in _NOT_FOR_PARTS]
    part_headers.extend(_ASKED_OF_PARTS)
    body = RequestBody(receive, _NO_BODY, max_bytes=0, idle_timeout_s=1.0)     # parts are GETs: nothing to send
    fetches = [_PartFetch(part, Forwarder(runtime, route_rt, "GET", part.target.fill(captures), part_headers, body,
                                          RequestTrace(trace.request_id, "GET"), recorder))
               for part in route.compose]
    try:
        await _fetch_all(fetches, route.timeout_s)
    finally:
        trace.parts = tuple(fetch.outcome() for fetch in fetches)
        trace.attempts = sum(fetch.forwarder.trace.attempts for fetch in fetches)
    decided = next((fetch for fetch in fetches if fetch.decides and fetch.outcome_flag != "abandoned"), None)
    if decided is not None:
        trace.upstream = decided.part.upstream
        raise decided.failure(route.name, route.timeout_s)

    missing = [fetch for fetch in fetches if fetch.body is None]
    document = _document(fetches, missing)
    response_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(document)),
        (b"date", formatdate(usegmt=True).encode()),
        (b"cache-control", b"no-store"),     # made of parts whose own caching rules are not passed on
    ]
    if missing:
        response_headers.append((b"x-strangler-partial", ",".join(fetch.part.name for fetch in missing).encode()))
    if runtime.config.expose_headers:
        answered = dict.fromkeys(fetch.part.upstream for fetch in fetches if fetch.body is not None)
        response_headers.append((b"x-strangler-route", route.name.encode()))
        response_headers.append((b"x-strangler-upstream", ", ".join(answered).encode()))
    response_headers.append((b"x-request-id", trace.request_id.encode()))
    await send({"type": "http.response.start", "status": 200, "headers": response_headers})
    trace.status = 200
    await send({"type": "http.response.body", "body": b"" if head.method == "HEAD" else document, "more_body": False})


async def _fetch_all(fetches: list[_PartFetch], timeout_s: float | None) -> None:
    """Run every fetch at once until all are done, or a required part has failed (the rest are abandoned)."""
    deadline = asyncio.get_running_loop().time() + timeout_s if timeout_s is not None else None
    tasks = {asyncio.ensure_future(fetch.run(deadline)): fetch for fetch in fetches}
    pending: Iterable[asyncio.Future[None]] = tasks
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            # A bug in a fetch is raised here, not left in its task (each task's exception is read).
            error = next((error for error in [task.exception() for task in done] if error is not None), None)
            if error is not None:
                raise error
            if any(tasks[task].decides for task in done):
                break
    finally:
        left = [task for task in tasks if not task.done()]
        for task in left:
            tasks[task].forwarder.abandoned = True
            task.cancel()
        if left:
            await asyncio.wait(left)


class _PartFetch:
    """One part on its way: its forwarder, then its status and JSON body, or why it has none."""

    __slots__ = ("part", "forwarder", "status", "body", "outcome_flag", "error", "ended")

    def __init__(self, part: Part, forwarder: Forwarder) -> None:
        self.part = part
        self.forwarder = forwarder
        self.status: int | None = None
        self.body: bytes | None = None          # the part's JSON, as it came; None when it is missing
        self.outcome_flag = "abandoned"
        self.error: ProxyError | None = None
        self.ended: float | None = None

    @property
    def decides(self) -> bool:
        """A required part that failed: the answer no longer depends on the others."""
        return self.part.required and self.body is None

    async def run(self, deadline: float | None) -> None:
        try:
            async with asyncio.timeout_at(deadline):
                # The composite's one deadline covers this part (its body too): not the route's again.
                lease = await self.forwarder.send(self.part.upstream)
                try:
                    self.status = lease.response.status  # type: ignore[union-attr]
                    body = await _read_body(lease, self.part.max_body_bytes)
                finally:
                    lease.close()
            self.outcome_flag, self.body = _judge(self.status, body)
        except TimeoutError:
            self.outcome_flag = "timeout"
        except ProxyError as error:
            self.outcome_flag, self.error = error.reason.flag, error
        finally:
            self.ended = time.perf_counter()

    def outcome(self) -> PartOutcome:
        trace = self.forwarder.trace
        return PartOutcome(name=self.part.name, upstream=self.part.upstream, outcome=self.outcome_flag,
                           status=self.status, attempts=trace.attempts,
                           duration_s=(self.ended or time.perf_counter()) - trace.started)

    def failure(self, route: str, timeout_s: float | None) -> ProxyError:
        """The whole's refusal, when this part is required and missing."""
        name, upstream = self.part.name, self.part.upstream
        where = f"required part '{name}' ({upstream})"
        error: ProxyError
        if self.error is not None:
            error = self.error
            error.detail = f"{where}: {error.detail}"
        elif self.outcome_flag == "timeout":
            error = UpstreamError(f"{where} did not answer within the route's timeout of {timeout_s:g}s",
                                  reason=Reason.TIMEOUT)
        elif self.status is not None and 400 <= self.status < 500:
            return PartRefused(f"{where} answered {self.status}", status=self.status, route=route, upstream=upstream,
                               part=name)
        else:
            error = ProxyError(f"{where} {_WHY.get(self.outcome_flag, f'answered {self.status}')}",
                               reason=Reason.PART_FAILED)
        error.route, error.upstream, error.part = route, upstream, name
        return error


async def _read_body(lease: UpstreamLease, limit: int) -> bytes | None:
    """The part's body, whole; None when it is over `limit` (left unread: its connection is not reused)."""
    response = lease.response
    assert response is not None
    declared = _content_length(response.raw_headers)
    if declared is not None and declared > limit:
        return None
    whole = response.whole_body()
    if whole is None:
        chunks: list[bytes] = []
        size = 0
        try:
            async with contextlib.aclosing(response.chunks()) as stream:
                async for chunk in stream:
                    size += len(chunk)
                    if size > limit:
                        return None
                    chunks.append(chunk)
        except UpstreamError:
            lease.upstream_failed = True
            raise
        whole = b"".join(chunks)
    elif len(whole) > limit:
        return None
    lease.body_complete = True
    return whole


def _content_length(raw_headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in raw_headers:
        if name.lower() == b"content-length":
            return int(value) if value.strip().isdigit() else None
    return None


def _judge(status: int, body: bytes | None) -> tuple[str, bytes | None]:
    """The part's outcome, and its body when that is a JSON answer the composite can carry."""
    if body is None:
        return "too_large", None
    if 200 <= status < 300:
        try:
            # Parsed to check it; the answer carries the part's own bytes (UTF-8, as JSON is sent).
            json.loads(body.decode("utf-8"))
        except (ValueError, RecursionError):
            return "not_json", None
        return "ok", body
    return ("not_found" if status == 404 else f"http_{status // 100}xx"), None


def _document(fetches: list[_PartFetch], missing: list[_PartFetch]) -> bytes:
    partial = [{"part": fetch.part.name, "reason": fetch.outcome_flag,
                **({"status": fetch.status} if fetch.status is not None else {})} for fetch in missing]
    pieces = [b"{"]
    for fetch in fetches:
        pieces += (json.dumps(fetch.part.name).encode(), b":", fetch.body if fetch.body is not None else b"null", b",")
    pieces += (b'"', PARTIAL_KEY.encode(), b'":', json.dumps(partial).encode(), b"}")
    return b"".join(pieces)

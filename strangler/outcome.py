"""What happened to one request: a trace the pipeline fills in, frozen into an outcome at the end."""

from __future__ import annotations

import os
import time
from typing import NamedTuple


def request_id_of(raw_headers: list[tuple[bytes, bytes]]) -> str:
    """The client's X-Request-ID when it is sane, else a new one."""
    for name, value in raw_headers:
        if name.lower() == b"x-request-id":
            if 0 < len(value) <= 128 and value.isascii():
                text = value.decode("ascii")     # bytes have no isprintable()
                if text.isprintable():
                    return text
            break
    return os.urandom(8).hex()


class PartOutcome(NamedTuple):
    """One part of a composite answer: what became of it, and how long it took."""

    name: str
    upstream: str
    outcome: str                 # ok, or why it is missing (not_found, http_5xx, not_json, too_large, timeout,
                                 # connect_error, circuit_open, bulkhead_full..., abandoned)
    status: int | None           # the part's HTTP status, when it answered
    attempts: int
    duration_s: float


class RequestOutcome(NamedTuple):
    """One request, over: what the recorder turns into metrics and an access log line.

    A named tuple: as immutable as a frozen dataclass, at a fifth of its cost to build (it is
    built once per request).
    """

    request_id: str
    method: str
    route: str                   # "" when no route matched
    upstream: str                # the upstream that answered or failed last; "" when none was tried
    status: int                  # as sent to the client; 499 when the client went away first
    attempts: int
    fallback_reason: str | None
    reason: str | None           # the proxy's reason flag when it made or broke the answer
    duration_s: float
    parts: tuple[PartOutcome, ...] = ()    # a composite answer's parts, in the route's order


class RequestTrace:
    """The decisions made so far for one request; written by the pipeline alone."""

    __slots__ = ("request_id", "method", "started", "route", "upstream", "status", "attempts",
                 "upstream_attempts", "fallback_reason", "new_cohort", "error", "parts")

    def __init__(self, request_id: str, method: str) -> None:
        self.request_id = request_id
        self.method = method
        self.started = time.perf_counter()
        self.route = ""
        self.upstream = ""
        self.status: int | None = None
        self.attempts = 0                   # all attempts, fallback included
        self.upstream_attempts = 0          # attempts on the current upstream (the retry policy's count)
        self.fallback_reason: str | None = None
        self.new_cohort: str | None = None  # a cohort id to set as a cookie on the answer
        self.error: BaseException | None = None
        self.parts: tuple[PartOutcome, ...] = ()

    def freeze(self) -> RequestOutcome:
        error = self.error
        reason = None if error is None else getattr(getattr(error, "reason", None), "flag", None)
        status = self.status
        return RequestOutcome(self.request_id, self.method, self.route, self.upstream,
                              499 if status is None else status, self.attempts, self.fallback_reason, reason,
                              time.perf_counter() - self.started, self.parts)

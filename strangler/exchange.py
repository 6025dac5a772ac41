"""One request's record: what was decided on the way, for metrics and the access log."""

from __future__ import annotations

import datetime
import json
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import ProxyError
from .logs import JSON_ACCESS_LOGGER
from .metrics import Metrics

if TYPE_CHECKING:
    from resilience.breaker import BreakerPermit

    from .runtime import UpstreamState

access_log = logging.getLogger("strangler.access")
json_access_log = logging.getLogger(JSON_ACCESS_LOGGER)    # its lines carry no logging prefix


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


class Exchange:
    __slots__ = (
        "metrics", "request_id", "method", "started", "route", "upstream", "status", "attempts",
        "upstream_attempts", "fallback_reason", "new_cohort", "sticky_bucket", "error", "body_complete",
        "permit", "_held",
    )

    def __init__(self, metrics: Metrics, request_id: str, method: str) -> None:
        self.metrics = metrics
        self.request_id = request_id
        self.method = method
        self.started = time.perf_counter()
        self.route = ""
        self.upstream = ""
        self.status: int | None = None
        self.attempts = 0
        self.upstream_attempts = 0
        self.fallback_reason: str | None = None
        self.new_cohort: str | None = None
        self.sticky_bucket: int | None = None
        self.error: BaseException | None = None
        self.body_complete = False
        self.permit: BreakerPermit | None = None    # the answering attempt's, settled when the body ends
        self._held: UpstreamState | None = None

    def count_attempt(self) -> None:
        self.attempts += 1
        self.upstream_attempts += 1

    def hold_upstream(self, state: UpstreamState) -> None:
        """Bulkhead permit taken for `state`: track it so it is released exactly once."""
        self._held = state
        self.upstream_attempts = 0
        self.metrics.inflight_of(state.upstream.name).inc()

    def release_upstream(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.bulkhead.release()
            self.metrics.inflight_of(held.upstream.name).dec()

    def record(self, log_format: str | None) -> None:
        """Count and log the request once it is over (the client's status 499 when it went away)."""
        self.release_upstream()
        if self.permit is not None:
            self.permit.release()
        status = self.status if self.status is not None else 499
        seconds = time.perf_counter() - self.started
        metrics = self.metrics
        metrics.count_request(self.route, self.upstream, self.method, status)
        if self.route and self.upstream:
            metrics.pair(self.route, self.upstream).duration.observe(seconds)
        reason = getattr(getattr(self.error, "reason", None), "flag", None)
        if reason is not None:
            metrics.proxy_errors.labels(self.route, self.upstream, reason).inc()
        if log_format is None or not access_log.isEnabledFor(logging.INFO):
            return
        if log_format == "json":
            json_access_log.info(json.dumps({
                "ts": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
                "event": "access", "rid": self.request_id, "method": self.method, "route": self.route or None,
                "upstream": self.upstream or None, "status": status, "attempts": self.attempts,
                "ms": round(seconds * 1000, 1), "fallback": self.fallback_reason, "reason": reason,
            }))
        else:
            access_log.info(
                "access rid=%s method=%s route=%s upstream=%s status=%d attempts=%d ms=%.1f%s%s",
                self.request_id, self.method, self.route or "-", self.upstream or "-", status, self.attempts,
                seconds * 1000,
                f" fallback={self.fallback_reason}" if self.fallback_reason else "",
                f" reason={reason}" if reason else "",
            )


def listener_refusal_recorder(metrics: Metrics, log_format: Callable[[], str | None]):
    """Count and log requests refused while parsing (400/408/414/431), which no Exchange ever sees."""

    def record(error: ProxyError, client: str | None) -> None:
        metrics.count_request("", "", "", error.status)
        metrics.proxy_errors.labels("", "", error.reason.flag).inc()
        form = log_format()
        if form is None or not access_log.isEnabledFor(logging.INFO):
            return
        if form == "json":
            json_access_log.info(json.dumps({
                "ts": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
                "event": "access", "rid": None, "method": None, "route": None,
                "upstream": None, "status": error.status, "attempts": 0, "ms": 0.0, "reason": error.reason.flag,
                "client": client,
            }))
        else:
            access_log.info("access rid=- method=- route=- upstream=- status=%d attempts=0 ms=0.0 reason=%s client=%s",
                            error.status, error.reason.flag, client or "-")

    return record

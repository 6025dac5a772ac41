"""The data path's one writer of metrics and access log lines.

The pipeline and the lease tell it what happened; only this module (and metrics.py,
which defines the families) touches the request metrics.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Callable

from .errors import ProxyError
from .logs import JSON_ACCESS_LOGGER
from .metrics import Metrics, PairMetrics
from .outcome import RequestOutcome

access_log = logging.getLogger("strangler.access")
json_access_log = logging.getLogger(JSON_ACCESS_LOGGER)    # its lines carry no logging prefix

# The access log's format from the current config: "plain", "json", or None when it is off (for the
# listener's refusals, which belong to no request's config).
LogFormat = Callable[[], str | None]


class Recorder:
    __slots__ = ("metrics", "_log_format")

    def __init__(self, metrics: Metrics, log_format: LogFormat) -> None:
        self.metrics = metrics
        self._log_format = log_format

    # --- while a request runs ---------------------------------------------------------------------

    def attempt(self, pair: PairMetrics, outcome: str, *, retry: bool) -> None:
        """One attempt sent to an upstream ended: ok, connect_error, timeout or http_5xx."""
        if retry:
            pair.retries.inc()
        pair.attempt(outcome)

    def fallback(self, route: str, from_upstream: str, to_upstream: str, reason: str) -> None:
        self.metrics.fallbacks.labels(route, from_upstream, to_upstream, reason).inc()

    def bulkhead_rejected(self, upstream: str) -> None:
        self.metrics.bulkhead_rejections.labels(upstream).inc()

    def upstream_busy(self, upstream: str, change: int) -> None:
        """A bulkhead slot taken (+1) or given back (-1)."""
        self.metrics.inflight_of(upstream).inc(change)

    def shadow_copy(self, route: str, shadow: str, result: str, duration_s: float | None) -> None:
        """A copy of a request came to `result` (match, mismatch, noise, shadow_error, skipped); it took
        `duration_s` at the shadow upstream when it was sent there."""
        children = self.metrics.shadow(route, shadow)
        children.result(result)
        if duration_s is not None:
            children.duration.observe(duration_s)

    # --- WebSocket tunnels, after their 101 -------------------------------------------------------

    def websocket_opened(self, route: str, upstream: str) -> None:
        self.metrics.websocket_connections.labels(route, upstream).inc()

    def websocket_closed(self, route: str, upstream: str, reason: str, duration_s: float) -> None:
        """A tunnel ended: `reason` is one of tunnel.END_REASONS (protocol errors are counted there)."""
        metrics = self.metrics
        metrics.websocket_connections.labels(route, upstream).dec()
        metrics.websocket_duration.labels(route, upstream).observe(duration_s)
        metrics.websocket_closed.labels(route, upstream, reason).inc()

    # --- once it is over ----------------------------------------------------------------------------

    def finish(self, outcome: RequestOutcome, log_format: str | None) -> None:
        """Count and log a request that is over, in the access log's format of its config (None: off)."""
        metrics = self.metrics
        metrics.count_request(outcome.route, outcome.upstream, outcome.method, outcome.status)
        if outcome.route and outcome.upstream:
            metrics.pair(outcome.route, outcome.upstream).duration.observe(outcome.duration_s)
        if outcome.reason is not None:
            metrics.proxy_errors.labels(outcome.route, outcome.upstream, outcome.reason).inc()
        for part in outcome.parts:
            metrics.count_compose_part(outcome.route, part.name, part.outcome)
        form = log_format
        if form is None or not access_log.isEnabledFor(logging.INFO):
            return
        if form == "json":
            line = {
                "ts": _now(), "event": "access", "rid": outcome.request_id, "method": outcome.method,
                "route": outcome.route or None, "upstream": outcome.upstream or None, "status": outcome.status,
                "attempts": outcome.attempts, "ms": round(outcome.duration_s * 1000, 1),
                "fallback": outcome.fallback_reason, "reason": outcome.reason,
            }
            if outcome.parts:
                line["parts"] = {part.name: {
                    "upstream": part.upstream, "outcome": part.outcome, "status": part.status,
                    "attempts": part.attempts, "ms": round(part.duration_s * 1000, 1),
                } for part in outcome.parts}
            json_access_log.info(json.dumps(line))
        else:
            access_log.info(
                "access rid=%s method=%s route=%s upstream=%s status=%d attempts=%d ms=%.1f%s%s%s",
                outcome.request_id, outcome.method, outcome.route or "-", outcome.upstream or "-", outcome.status,
                outcome.attempts, outcome.duration_s * 1000,
                f" fallback={outcome.fallback_reason}" if outcome.fallback_reason else "",
                f" reason={outcome.reason}" if outcome.reason else "",
                " parts=" + ",".join(f"{part.name}:{part.outcome}:{part.duration_s * 1000:.1f}ms"
                                     for part in outcome.parts) if outcome.parts else "",
            )

    def listener_refusal(self, error: ProxyError, client: str | None) -> None:
        """A request refused while parsing (400/408/414/431/405), which the pipeline never sees."""
        self.metrics.count_request("", "", "", error.status)
        self.metrics.proxy_errors.labels("", "", error.reason.flag).inc()
        form = self._log_format()
        if form is None or not access_log.isEnabledFor(logging.INFO):
            return
        if form == "json":
            json_access_log.info(json.dumps({
                "ts": _now(), "event": "access", "rid": None, "method": None, "route": None, "upstream": None,
                "status": error.status, "attempts": 0, "ms": 0.0, "reason": error.reason.flag, "client": client,
            }))
        else:
            access_log.info("access rid=- method=- route=- upstream=- status=%d attempts=0 ms=0.0 reason=%s client=%s",
                            error.status, error.reason.flag, client or "-")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")

"""Gate figures from the proxy's own metrics: this process's registry, or every worker's files.

A window's figures are the difference between the counters now and where they
stood when the window began. A window that began before this process started
(a restart mid-step) counts from the process's start: the counters began at 0.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from ..metrics import Metrics, read_samples
from .figures import RouteWindow, UpstreamWindow, quantile_from_buckets

log = logging.getLogger("strangler.control")

FAMILIES = frozenset({"strangler_requests", "strangler_request_duration_seconds", "strangler_fallbacks",
                      "strangler_circuit_breaker_transitions", "strangler_shadow_requests"})
_COMPARED = ("match", "mismatch", "noise")
_MATCHED = ("match", "noise")


@dataclass
class _Counts:
    """One route's cumulative counters at one moment."""

    requests: Counter = field(default_factory=Counter)                  # upstream -> count
    errors: Counter = field(default_factory=Counter)
    buckets: dict = field(default_factory=lambda: defaultdict(Counter))  # upstream -> {le: cumulative count}
    diverted: Counter = field(default_factory=Counter)
    opened: Counter = field(default_factory=Counter)
    shadow: Counter = field(default_factory=Counter)                    # result -> count


class RegistryFigures:
    """GateFigures read from the local prometheus registry (the multiprocess files with --workers)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._baselines: dict[str, tuple[float, _Counts]] = {}

    def begin_window(self, route: str, started_at: float) -> None:
        try:
            counts = self._snapshot().get(route, _Counts())
        except Exception:       # unreadable now: the window counts from the process's start
            log.exception("figures.unreadable route=%s", route)
            self._baselines.pop(route, None)
            return
        self._baselines[route] = (started_at, counts)

    def describe(self, route: str, started_at: float, now: float) -> dict[str, str]:
        return {"source": "local metrics"}

    async def read_window(self, route: str, started_at: float, now: float) -> RouteWindow | None:
        try:
            current = self._snapshot().get(route, _Counts())
        except Exception:
            log.exception("figures.unreadable route=%s", route)
            return None
        found = self._baselines.get(route)
        base = found[1] if found is not None and found[0] == started_at else _Counts()
        upstreams = {}
        for name in set(current.requests) | set(current.diverted) | set(current.opened):
            buckets = [(le, current.buckets[name][le] - base.buckets[name][le]) for le in current.buckets[name]]
            upstreams[name] = UpstreamWindow(
                requests=_delta(current.requests, base.requests, name),
                errors=_delta(current.errors, base.errors, name),
                p95_s=quantile_from_buckets(0.95, buckets),
                diverted=_delta(current.diverted, base.diverted, name),
                breaker_opened=_delta(current.opened, base.opened, name),
            )
        shadow = {result: _delta(current.shadow, base.shadow, result) for result in _COMPARED}
        return RouteWindow(seconds=max(0.0, now - started_at), upstreams=upstreams,
                           shadow_compared=sum(shadow.values()),
                           shadow_matched=sum(shadow[result] for result in _MATCHED))

    def _snapshot(self) -> dict[str, _Counts]:
        routes: dict[str, _Counts] = defaultdict(_Counts)
        for name, labels, value in read_samples(self.metrics, FAMILIES):
            route = labels.get("route")
            if not route:
                continue
            counts = routes[route]
            if name == "strangler_requests_total" and labels.get("upstream"):
                counts.requests[labels["upstream"]] += value
                if labels.get("code", "").startswith("5"):
                    counts.errors[labels["upstream"]] += value
            elif name == "strangler_request_duration_seconds_bucket":
                counts.buckets[labels["upstream"]][float(labels["le"])] += value
            elif name == "strangler_fallbacks_total":
                counts.diverted[labels["from_upstream"]] += value
            elif name == "strangler_circuit_breaker_transitions_total" and labels.get("to") == "open":
                counts.opened[labels["upstream"]] += value
            elif name == "strangler_shadow_requests_total":
                counts.shadow[labels.get("result", "")] += value
        return routes


def _delta(now: Counter, then: Counter, key: str) -> int:
    # Counters only grow; a smaller value means they started again (a worker's file went away).
    return max(0, int(now[key] - then[key]))

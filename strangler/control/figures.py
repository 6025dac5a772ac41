"""What the gates read: per route and upstream, the figures of one window, through one interface.

`GateFigures` is that interface. Its first implementation (local.py) reads this
process's metrics, or every worker's; a controller in a process of its own can
read the same figures from Prometheus instead (prometheus.py). An implementation
that cannot read its figures returns None, or raises FiguresUnreadable saying
why: the step is then inconclusive, never a breach.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamWindow:
    """One upstream on one route, over one window."""

    requests: int = 0            # answered by it (answers it gave as the fallback included)
    errors: int = 0              # of those, 5xx: its own and the proxy's (502, 503, 504) for it
    p95_s: float | None = None   # None: no request finished in the window
    diverted: int = 0            # requests meant for it that went to the route's fallback instead
    breaker_opened: int = 0      # times its breaker on this route opened


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteWindow:
    """One route over one window: each upstream's figures, and shadow comparisons when it has shadow on."""

    seconds: float
    upstreams: Mapping[str, UpstreamWindow] = field(default_factory=dict)
    shadow_compared: int = 0     # copies compared (match, mismatch or noise)
    shadow_matched: int = 0      # of those, match or noise

    def of(self, upstream: str) -> UpstreamWindow:
        return self.upstreams.get(upstream) or UpstreamWindow()


class FiguresUnreadable(Exception):
    """The window's figures cannot be read now (the source is away, or has no data); the message says why."""


class GateFigures(Protocol):
    def begin_window(self, route: str, started_at: float) -> None:
        """A window of `route` starts at `started_at` (wall clock): remember where the counters stand."""

    async def read_window(self, route: str, started_at: float, now: float) -> RouteWindow | None:
        """The route's figures from `started_at` to `now`; None (or FiguresUnreadable) when they cannot be read."""

    # Optional: `describe(route, started_at, now) -> dict`, where the figures come from and how they are
    # read (the PromQL), shown in GET /ramps.


class NoFigures:
    """GateFigures of a controller that has no source of figures: every step is inconclusive, saying why."""

    def __init__(self, why: str) -> None:
        self.why = why

    def begin_window(self, route: str, started_at: float) -> None:
        pass

    async def read_window(self, route: str, started_at: float, now: float) -> RouteWindow | None:
        raise FiguresUnreadable(self.why)

    def describe(self, route: str, started_at: float, now: float) -> dict[str, str]:
        return {"source": "none", "why": self.why}


def quantile_from_buckets(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The q-quantile of a histogram's cumulative (upper bound, count) buckets, as Prometheus's
    histogram_quantile interpolates it; None when the histogram is empty."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                # Above the highest finite bucket: the best known is that bound.
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return ordered[-1][0]

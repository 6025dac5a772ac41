"""The dashboard's memory: the proxy's own counters, read every 5 seconds, 15 minutes of them kept.

Each tick reads the local metrics registry (every worker's, with --workers) and
turns the change since the previous reading into one frame per route: requests/s,
error rate and p95 of the route's new side and of its legacy side. The figures of
the last minute (per route) and of the last five (the migration's progress) are
computed at the same time, so a page that polls reads them without work. The page
needs nothing else, and no Prometheus.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..metrics import Sample

log = logging.getLogger("strangler.dashboard")

INTERVAL_S = 5.0
KEEP_S = 15 * 60.0
ROUTE_WINDOW_S = 60.0          # requests/s, error rates, p95 and fallbacks per route
PROGRESS_WINDOW_S = 5 * 60.0   # the share served by new upstreams; shadow match rates

# Families as prometheus_client names them (counters without _total).
FAMILIES = frozenset({"strangler_requests", "strangler_request_duration_seconds", "strangler_fallbacks",
                      "strangler_shadow_requests"})
# A shadow answer that differs only where the primary differs from itself is a match.
SHADOW_AGREED = frozenset({"match", "noise"})
SHADOW_COMPARED = SHADOW_AGREED | {"mismatch", "shadow_error"}

Sides = dict[str, str | None]      # route -> its legacy upstream, in the config's order
Point = tuple[float | None, ...]   # new rps, legacy rps, new error rate, legacy error rate, new p95 ms, legacy p95 ms


@dataclass(frozen=True, slots=True)
class Frame:
    """One interval: per route a Point, and the share of all requests that new upstreams served."""

    seq: int
    at: float
    new_share: float | None
    routes: dict[str, Point]


@dataclass(slots=True)
class Side:
    """What one side of a route (legacy, or the new upstreams together) answered over a window."""

    requests: float = 0.0          # answered by this side
    errors: float = 0.0            # of which 5xx
    fell_back: float = 0.0         # meant for this side, answered by the fallback (breaker open, failure)
    buckets: dict[float, float] = field(default_factory=dict)     # le -> cumulative count

    def figures(self, seconds: float) -> dict[str, float | None]:
        # As a ramp's gates count: what the fallback took from a side is that side's error, which
        # the client never saw (a breaker that opens is not a quiet side).
        meant = self.requests + self.fell_back
        return {"requests_per_s": rounded(self.requests / seconds),
                "error_rate": rounded((self.errors + self.fell_back) / meant) if meant else None,
                "p95_ms": rounded(_ms(quantile(0.95, self.buckets)))}


@dataclass(slots=True)
class RouteWindow:
    new: Side = field(default_factory=Side)
    legacy: Side = field(default_factory=Side)
    fallbacks: float = 0.0
    shadow: dict[str, dict[str, float]] = field(default_factory=dict)     # shadow upstream -> result -> count


@dataclass(frozen=True, slots=True)
class Latest:
    """The figures a page shows as numbers, from the latest tick."""

    at: float
    routes: dict[str, dict[str, Any]]
    progress: dict[str, Any]


class History:
    """A bounded record of the proxy's counters; `tick` reads them once, the page reads what it made."""

    def __init__(self, read: Callable[[], Iterable[Sample]], sides: Callable[[], Sides | None], *,
                 interval_s: float = INTERVAL_S, keep_s: float = KEEP_S, clock: Callable[[], float] = time.time) -> None:
        self.read = read
        self.sides = sides
        self.interval_s = interval_s
        self.clock = clock
        self.frames: deque[Frame] = deque(maxlen=max(1, round(keep_s / interval_s)))
        self.latest: Latest | None = None
        self.seq = 0
        # Readings are flat arrays of counter values; _slots says which series each index holds.
        self._slots: dict[tuple[Any, ...], int] = {}
        self._readings: deque[tuple[float, array]] = deque(maxlen=round(PROGRESS_WINDOW_S / interval_s) + 1)

    async def run(self) -> None:
        """Tick every interval, forever; a failed tick is logged and the next one tries again."""
        while True:
            try:
                self.tick()
            except Exception:
                log.exception("dashboard.history_error")
            await asyncio.sleep(self.interval_s)

    def tick(self) -> None:
        sides = self.sides()
        if sides is None:
            return
        now, reading = self.clock(), self._reading(self.read())
        previous = self._readings[-1] if self._readings else None
        self._readings.append((now, reading))
        if previous is None:
            return
        self.seq += 1
        interval = self._window(sides, previous, (now, reading))
        seconds = max(now - previous[0], 1e-9)
        points = {}
        for name, found in interval.items():
            new, legacy = found.new.figures(seconds), found.legacy.figures(seconds)
            points[name] = (new["requests_per_s"], legacy["requests_per_s"], new["error_rate"], legacy["error_rate"],
                            new["p95_ms"], legacy["p95_ms"])
        self.frames.append(Frame(self.seq, now, _new_share(interval), points))
        self.latest = self._latest(sides, now, reading)

    def frames_since(self, seq: int) -> list[Frame]:
        return [frame for frame in self.frames if frame.seq > seq]

    # -- reading ------------------------------------------------------------------------------

    def _reading(self, samples: Iterable[Sample]) -> array:
        values = array("d", bytes(8 * len(self._slots)))
        for name, labels, value in samples:
            route = labels.get("route", "")
            if not route:
                continue            # refused before any route matched: no side served it
            if name == "strangler_requests_total":
                keys = [("requests", route, labels.get("upstream", ""))]
                if labels.get("code", "").startswith("5"):
                    keys.append(("errors", route, labels.get("upstream", "")))
            elif name == "strangler_request_duration_seconds_bucket":
                keys = [("le", route, labels.get("upstream", ""), float(labels["le"]))]
            elif name == "strangler_fallbacks_total":
                keys = [("fallbacks", route, labels.get("from_upstream", ""))]
            elif name == "strangler_shadow_requests_total":
                keys = [("shadow", route, labels.get("shadow", ""), labels.get("result", ""))]
            else:
                continue
            for key in keys:
                slot = self._slots.get(key)
                if slot is None:
                    slot = self._slots[key] = len(values)
                    values.append(0.0)
                values[slot] += value
        return values

    def _window(self, sides: Sides, old: tuple[float, array], new: tuple[float, array]) -> dict[str, RouteWindow]:
        """What each route of `sides` answered between two readings."""
        before, after = old[1], new[1]
        found = {name: RouteWindow() for name in sides}
        for key, slot in self._slots.items():
            route = found.get(key[1])
            if route is None or slot >= len(after):
                continue
            # A counter that went down started again (a worker replaced): count from zero.
            change = after[slot] - (before[slot] if slot < len(before) else 0.0)
            change = after[slot] if change < 0 else change
            kind = key[0]
            if not change and kind != "le":       # an empty bucket still bounds the next one
                continue
            if kind == "fallbacks":
                route.fallbacks += change
                (route.legacy if key[2] == sides[key[1]] else route.new).fell_back += change
            elif kind == "shadow":
                results = route.shadow.setdefault(key[2], {})
                results[key[3]] = results.get(key[3], 0.0) + change
            else:
                side = route.legacy if key[2] == sides[key[1]] else route.new
                if kind == "requests":
                    side.requests += change
                elif kind == "errors":
                    side.errors += change
                else:
                    side.buckets[key[3]] = side.buckets.get(key[3], 0.0) + change
        return found

    def _latest(self, sides: Sides, now: float, reading: array) -> Latest:
        earlier = list(self._readings)[:-1]

        def since(seconds: float) -> tuple[float, array]:
            # The oldest reading within the window (the window is shorter while the history is young).
            return next((item for item in earlier if item[0] >= now - seconds - self.interval_s / 2), earlier[-1])

        minute_start = since(ROUTE_WINDOW_S)
        minute = self._window(sides, minute_start, (now, reading))
        longer_start = since(PROGRESS_WINDOW_S)
        longer = self._window(sides, longer_start, (now, reading))
        minute_s, longer_s = max(now - minute_start[0], 1e-9), max(now - longer_start[0], 1e-9)
        routes = {}
        for name, found in minute.items():
            new, legacy = found.new.figures(minute_s), found.legacy.figures(minute_s)
            routes[name] = {
                "window_s": round(minute_s, 1),
                "requests_per_s": rounded((found.new.requests + found.legacy.requests) / minute_s),
                "new": new, "legacy": legacy,
                "fallbacks_per_min": rounded(found.fallbacks * 60 / minute_s),
                "shadow": _shadow_figures(longer[name].shadow, longer_s),
            }
        served = sum(found.new.requests + found.legacy.requests for found in longer.values())
        progress = {"window_s": round(longer_s, 1), "requests": round(served), "new_share": _new_share(longer)}
        return Latest(now, routes, progress)


def _new_share(routes: dict[str, RouteWindow]) -> float | None:
    new = sum(found.new.requests for found in routes.values())
    served = new + sum(found.legacy.requests for found in routes.values())
    return rounded(new / served) if served else None


def _shadow_figures(shadows: dict[str, dict[str, float]], seconds: float) -> dict[str, Any] | None:
    if not shadows:
        return None
    counts: dict[str, float] = {}
    for results in shadows.values():
        for result, count in results.items():
            counts[result] = counts.get(result, 0.0) + count
    compared = sum(count for result, count in counts.items() if result in SHADOW_COMPARED)
    agreed = sum(count for result, count in counts.items() if result in SHADOW_AGREED)
    return {"window_s": round(seconds, 1), "upstreams": sorted(shadows),
            "counts": {result: round(count) for result, count in sorted(counts.items())},
            "match_rate": rounded(agreed / compared) if compared else None}


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The q-quantile of cumulative histogram buckets, interpolated within a bucket as Prometheus does."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower         # past the last finite bucket: its upper bound, as histogram_quantile says
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def rounded(value: float | None, digits: int = 4) -> float | None:
    """Four significant digits: the page shows no more, and the JSON stays small."""
    if value is None or not math.isfinite(value):
        return None
    if value == 0:
        return 0.0
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0

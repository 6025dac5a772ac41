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
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..metrics import Sample
from .windows import Layout, RouteWindow, Sides, SlotKey, rounded

log = logging.getLogger("strangler.dashboard")

INTERVAL_S = 5.0
KEEP_S = 15 * 60.0
ROUTE_WINDOW_S = 60.0          # requests/s, error rates, p95 and fallbacks per route
PROGRESS_WINDOW_S = 5 * 60.0   # the share served by new upstreams; shadow match rates

# Families as prometheus_client names them (counters without _total).
FAMILIES = frozenset({"strangler_requests", "strangler_request_duration_seconds", "strangler_fallbacks",
                      "strangler_shadow_requests"})
# As a ramp's min_shadow_match counts: an answer that differs only where the primary differs from
# itself (noise) agrees; a copy that failed or was skipped was never compared.
SHADOW_AGREED = frozenset({"match", "noise"})
SHADOW_COMPARED = SHADOW_AGREED | {"mismatch"}

Point = tuple[float | None, ...]   # new rps, legacy rps, new error rate, legacy error rate, new p95 ms, legacy p95 ms


@dataclass(frozen=True, slots=True)
class Frame:
    """One interval: per route a Point, and the share of all requests that new upstreams served."""

    seq: int
    at: float
    new_share: float | None
    routes: dict[str, Point]


@dataclass(frozen=True, slots=True)
class Latest:
    """The figures a page shows as numbers, from the latest tick."""

    at: float
    routes: dict[str, dict[str, Any]]
    progress: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Measured:
    at: float
    new_share: float | None
    points: dict[str, Point]
    latest: Latest


class History:
    """A bounded record of the proxy's counters; `tick` reads them once, the page reads what it made."""

    def __init__(self, read: Callable[[], Iterable[Sample]], sides: Callable[[], Sides | None], *,
                 interval_s: float = INTERVAL_S, keep_s: float = KEEP_S, clock: Callable[[], float] = time.time) -> None:
        self.read = read
        self.sides = sides
        self.interval_s = interval_s
        self.clock = clock
        self.capacity = max(1, round(keep_s / interval_s))
        # Replaced whole, never changed in place: a page's request may read them from another thread.
        self.frames: tuple[Frame, ...] = ()
        self.latest: Latest | None = None
        self.seq = 0
        # Readings are flat arrays of counter values; _slots says which series each index holds.
        self._slots: dict[SlotKey, int] = {}
        self._readings: deque[tuple[float, array]] = deque(maxlen=round(PROGRESS_WINDOW_S / interval_s) + 1)
        self._layout: Layout | None = None

    async def run(self) -> None:
        """Tick every interval, forever; a failed tick is logged and the next one tries again."""
        while True:
            try:
                # Reading the counters and the arithmetic take tens of milliseconds at 200 routes: a
                # thread does them, so that the proxy's event loop (the same, without --workers) goes on.
                measured = await asyncio.to_thread(self.measure)
                if measured is not None:
                    self.record(measured)
            except Exception:
                log.exception("dashboard.history_error")
            await asyncio.sleep(self.interval_s)

    def tick(self) -> None:
        """Read the counters and record what changed since the last reading."""
        measured = self.measure()
        if measured is not None:
            self.record(measured)

    def measure(self) -> Measured | None:
        """One reading, and what changed since the previous one; None for the first, or with no config.

        Touches only the readings: `record` (on the event loop) is what pages read.
        """
        sides = self.sides()
        if sides is None:
            return None
        now, reading = self.clock(), self._reading(self.read())
        previous = self._readings[-1] if self._readings else None
        self._readings.append((now, reading))
        if previous is None:
            return None
        if self._layout is None or not self._layout.fits(sides, self._slots):
            self._layout = Layout(sides, self._slots)
        interval = self._layout.window(previous[1], reading)
        seconds = max(now - previous[0], 1e-9)
        points = {}
        for name, found in interval.items():
            new, legacy = found.new.figures(seconds), found.legacy.figures(seconds)
            points[name] = (new["requests_per_s"], legacy["requests_per_s"], new["error_rate"], legacy["error_rate"],
                            new["p95_ms"], legacy["p95_ms"])
        return Measured(now, _new_share(interval), points, self._latest(self._layout, now, reading))

    def record(self, measured: Measured) -> None:
        self.seq += 1
        self.frames = (*self.frames, Frame(self.seq, measured.at, measured.new_share, measured.points))[-self.capacity:]
        self.latest = measured.latest

    def frames_since(self, seq: int) -> tuple[Frame, ...]:
        frames = self.frames
        skip = next((index for index, frame in enumerate(frames) if frame.seq > seq), len(frames))
        return frames[skip:]

    # -- reading ------------------------------------------------------------------------------

    def _reading(self, samples: Iterable[Sample]) -> array:
        values = array("d", bytes(8 * len(self._slots)))
        for name, labels, value in samples:
            route = labels.get("route", "")
            if not route:
                continue            # refused before any route matched: no side served it
            if name == "strangler_requests_total":
                upstream = labels.get("upstream", "")
                if not upstream:
                    continue        # answered by no one upstream (a composite's parts, a refusal): no side
                keys = [("requests", route, upstream)]
                if labels.get("code", "").startswith("5"):
                    keys.append(("errors", route, upstream))
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

    def _latest(self, layout: Layout, now: float, reading: array) -> Latest:
        earlier = list(self._readings)[:-1]

        def since(seconds: float) -> tuple[float, array]:
            # The oldest reading within the window (the window is shorter while the history is young).
            return next((item for item in earlier if item[0] >= now - seconds - self.interval_s / 2), earlier[-1])

        minute_start = since(ROUTE_WINDOW_S)
        minute = layout.window(minute_start[1], reading)
        longer_start = since(PROGRESS_WINDOW_S)
        longer = layout.window(longer_start[1], reading)
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

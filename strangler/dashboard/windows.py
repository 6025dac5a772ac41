"""What each route answered between two readings of the proxy's counters, its new side against its legacy side.

A reading is a flat array of counter values; a Layout, made once per config and
set of series, says where each value adds up, so that a window over 200 routes
is one pass of arithmetic rather than a lookup per series.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from itertools import chain, repeat
from typing import Any

Sides = dict[str, str | None]      # route -> its legacy upstream, in the config's order
SlotKey = tuple[Any, ...]          # ("requests" | "errors" | "fallbacks", route, upstream), ("le", route, upstream,
                                   # bound), ("shadow", route, shadow, result)
# Within one side of a route: its counts, then its histogram buckets.
REQUESTS, ERRORS, FELL_BACK, BUCKETS = 0, 1, 2, 3


@dataclass(slots=True)
class Side:
    """What one side of a route (legacy, or the new upstreams together) answered over a window."""

    requests: float = 0.0          # answered by this side
    errors: float = 0.0            # of which 5xx
    fell_back: float = 0.0         # meant for this side, answered by the fallback (breaker open, failure)
    bounds: list[float] = field(default_factory=list)
    buckets: list[float] = field(default_factory=list)     # cumulative counts at each bound

    def figures(self, seconds: float) -> dict[str, float | None]:
        # As a ramp's gates count: what the fallback took from a side is that side's error, which
        # the client never saw (a breaker that opens is not a quiet side).
        meant = self.requests + self.fell_back
        p95_s = quantile(0.95, self.bounds, self.buckets)
        return {"requests_per_s": rounded(self.requests / seconds),
                "error_rate": rounded((self.errors + self.fell_back) / meant) if meant else None,
                "p95_ms": rounded(None if p95_s is None else p95_s * 1000.0)}


@dataclass(slots=True)
class RouteWindow:
    new: Side = field(default_factory=Side)
    legacy: Side = field(default_factory=Side)
    fallbacks: float = 0.0
    shadow: dict[str, dict[str, float]] = field(default_factory=dict)     # shadow upstream -> result -> count


class Layout:
    """Where each counter of a reading adds up, for the routes and legacy sides of one config."""

    def __init__(self, sides: Sides, slots: dict[SlotKey, int]) -> None:
        self.sides = dict(sides)
        self.slot_count = len(slots)
        # Every duration histogram of the proxy has the same buckets.
        self.bounds = sorted({key[3] for key in slots if key[0] == "le"})
        self.side_width = BUCKETS + len(self.bounds)
        self.route_width = 1 + 2 * self.side_width          # fallbacks, the new side, the legacy side
        self.routes = list(sides)
        bucket_of = {bound: index for index, bound in enumerate(self.bounds)}
        route_of = {name: index for index, name in enumerate(self.routes)}
        self.targets: list[tuple[int, int]] = []            # (slot, where it adds up)
        self.shadow: list[tuple[int, str, str, str]] = []   # (slot, route, shadow upstream, result)
        for key, slot in slots.items():
            index = route_of.get(key[1])
            if index is None:
                continue                                    # a route the config no longer has
            kind, base = key[0], index * self.route_width
            if kind == "shadow":
                self.shadow.append((slot, key[1], key[2], key[3]))
                continue
            side = base + 1 + (self.side_width if key[2] == sides[key[1]] else 0)
            if kind == "requests":
                self.targets.append((slot, side + REQUESTS))
            elif kind == "errors":
                self.targets.append((slot, side + ERRORS))
            elif kind == "fallbacks":
                self.targets += [(slot, side + FELL_BACK), (slot, base)]
            else:
                self.targets.append((slot, side + BUCKETS + bucket_of[key[3]]))

    def fits(self, sides: Sides, slots: dict[SlotKey, int]) -> bool:
        return len(slots) == self.slot_count and sides == self.sides

    def window(self, before: array, after: array) -> dict[str, RouteWindow]:
        """What each route answered between two readings (`after` has every slot; `before` may lack new ones)."""
        padded = chain(before, repeat(0.0, len(after) - len(before)))
        # A counter that went down started again (a worker replaced): count from zero.
        change = [now - then if now >= then else now for now, then in zip(after, padded)]
        totals = [0.0] * (len(self.routes) * self.route_width)
        for slot, target in self.targets:
            totals[target] += change[slot]
        found = {}
        for index, name in enumerate(self.routes):
            base = index * self.route_width
            found[name] = RouteWindow(new=self._side(totals, base + 1),
                                      legacy=self._side(totals, base + 1 + self.side_width), fallbacks=totals[base])
        for slot, route, shadow, result in self.shadow:
            if change[slot]:
                results = found[route].shadow.setdefault(shadow, {})
                results[result] = results.get(result, 0.0) + change[slot]
        return found

    def _side(self, totals: list[float], start: int) -> Side:
        return Side(totals[start + REQUESTS], totals[start + ERRORS], totals[start + FELL_BACK], self.bounds,
                    totals[start + BUCKETS:start + self.side_width])


def quantile(q: float, bounds: list[float], counts: list[float]) -> float | None:
    """The q-quantile of cumulative histogram buckets, interpolated within a bucket as Prometheus does."""
    if not counts or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    lower, below = 0.0, 0.0
    for bound, count in zip(bounds, counts):
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

"""The dashboard's history: frames from the proxy's own counters, on an injected clock, with no registry."""

from __future__ import annotations

import math

import pytest

from strangler.dashboard.history import History
from strangler.dashboard.windows import quantile, rounded
from strangler.metrics import DURATION_BUCKETS_S

BOUNDS = (*DURATION_BUCKETS_S, math.inf)


class Counters:
    """What a registry would hold: requests by (route, upstream, code), durations, fallbacks, shadow copies."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], float] = {}
        self.durations: dict[tuple[str, str], list[float]] = {}
        self.fallbacks: dict[str, float] = {}
        self.shadow: dict[tuple[str, str, str], float] = {}

    def serve(self, route: str, upstream: str, count: int, *, code: str = "200", seconds: float = 0.004) -> None:
        key = (route, upstream, code)
        self.requests[key] = self.requests.get(key, 0) + count
        self.durations.setdefault((route, upstream), []).extend([seconds] * count)

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        found = [("strangler_requests_total", {"route": r, "upstream": u, "method": "GET", "code": c}, n)
                 for (r, u, c), n in self.requests.items()]
        for (route, upstream), seen in self.durations.items():
            for bound in BOUNDS:
                found.append(("strangler_request_duration_seconds_bucket",
                              {"route": route, "upstream": upstream, "le": str(bound) if bound != math.inf else "+Inf"},
                              sum(1 for value in seen if value <= bound)))
            found.append(("strangler_request_duration_seconds_count", {"route": route, "upstream": upstream}, len(seen)))
        found += [("strangler_fallbacks_total", {"route": route, "from_upstream": "orders", "to_upstream": "legacy",
                                                 "reason": "circuit_open"}, n) for route, n in self.fallbacks.items()]
        found += [("strangler_shadow_requests_total", {"route": r, "shadow": s, "result": result}, n)
                  for (r, s, result), n in self.shadow.items()]
        # A request no route took: no side served it.
        found.append(("strangler_requests_total", {"route": "", "upstream": "", "method": "", "code": "404"}, 99))
        return found


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


SIDES = {"orders": "legacy", "everything": "legacy"}


def history(counters: Counters, clock: Clock, sides: dict | None = None, **options) -> History:
    return History(counters.samples, lambda: dict(sides or SIDES), clock=clock, **options)


def advance(found: History, clock: Clock, seconds: float = 5.0) -> None:
    clock.now += seconds
    found.tick()


def test_a_frame_sets_the_new_side_against_legacy_per_route() -> None:
    counters, clock = Counters(), Clock()
    found = history(counters, clock)
    found.tick()
    assert list(found.frames) == [] and found.latest is None      # one reading is no interval yet
    counters.serve("orders", "orders", 50)
    counters.serve("orders", "orders", 10, code="503", seconds=0.2)
    counters.serve("orders", "legacy", 100, seconds=0.02)
    counters.serve("everything", "legacy", 40)
    advance(found, clock)
    [frame] = found.frames
    new_rps, legacy_rps, new_errors, legacy_errors, new_p95, legacy_p95 = frame.routes["orders"]
    assert (new_rps, legacy_rps) == (12.0, 20.0)
    assert (new_errors, legacy_errors) == (rounded(10 / 60), 0.0)
    assert (new_p95, legacy_p95) == (205.0, 24.25)                 # interpolated within their buckets
    assert frame.routes["everything"][:2] == (0.0, 8.0)
    assert frame.new_share == rounded(60 / 200)                   # the 404 no route took is nobody's


def test_the_latest_figures_cover_the_last_minute_per_route_and_five_for_progress() -> None:
    counters, clock = Counters(), Clock()
    found = history(counters, clock)
    found.tick()
    for _ in range(60):                   # five minutes: legacy only for four, then new only for one
        counters.serve("orders", "legacy" if clock.now < 1_000_240 else "orders", 10)
        advance(found, clock)
    orders = found.latest.routes["orders"]
    assert orders["window_s"] == 60.0
    assert orders["new"]["requests_per_s"] == 2.0 and orders["legacy"]["requests_per_s"] == 0.0
    assert orders["new"]["error_rate"] == 0.0 and orders["legacy"]["error_rate"] is None
    assert found.latest.progress == {"window_s": 300.0, "requests": 600, "new_share": 0.2}


def test_the_history_is_bounded_to_fifteen_minutes_of_frames() -> None:
    counters, clock = Counters(), Clock()
    found = history(counters, clock)
    for _ in range(400):
        counters.serve("orders", "orders", 1)
        advance(found, clock)
    assert len(found.frames) == 180 and found.frames[-1].seq == 399
    assert len(found._readings) == 61                                # five minutes for the longest window
    assert [frame.seq for frame in found.frames_since(397)] == [398, 399]
    assert len(found.frames_since(0)) == 180


def test_a_counter_that_starts_again_counts_from_zero() -> None:
    counters, clock = Counters(), Clock()
    found = history(counters, clock)
    counters.serve("orders", "orders", 500)
    found.tick()
    counters.requests[("orders", "orders", "200")] = 25               # a worker replaced: its counts begin anew
    advance(found, clock)
    assert found.frames[-1].routes["orders"][0] == 5.0


def test_routes_follow_the_config_and_a_route_without_legacy_is_all_new() -> None:
    counters, clock = Counters(), Clock()
    sides = {"orders": "legacy", "gone": "legacy"}
    found = History(counters.samples, lambda: dict(sides), clock=clock)
    found.tick()
    counters.serve("orders", "orders", 10)
    advance(found, clock)
    assert set(found.frames[-1].routes) == {"orders", "gone"}
    sides.clear()
    sides["orders"] = None                                             # no legacy side: everything it serves is new
    counters.serve("orders", "legacy", 10)
    advance(found, clock)
    assert set(found.frames[-1].routes) == {"orders"}
    assert found.frames[-1].routes["orders"][:2] == (2.0, 0.0)


def test_shadow_match_rate_and_fallbacks_come_from_their_counters() -> None:
    counters, clock = Counters(), Clock()
    found = history(counters, clock)
    found.tick()
    counters.serve("orders", "legacy", 10)
    counters.shadow.update({("orders", "orders", "match"): 97, ("orders", "orders", "noise"): 1,
                            ("orders", "orders", "mismatch"): 1, ("orders", "orders", "shadow_error"): 1,
                            ("orders", "orders", "skipped"): 50})
    counters.fallbacks["orders"] = 3
    advance(found, clock)
    orders = found.latest.routes["orders"]
    assert orders["shadow"]["match_rate"] == 0.9899                    # failed and skipped copies were never compared
    assert orders["shadow"]["upstreams"] == ["orders"]
    assert orders["fallbacks_per_min"] == 36.0
    assert found.latest.routes["everything"]["shadow"] is None


def test_what_the_fallback_took_from_a_side_counts_as_that_sides_errors() -> None:
    """Clients saw legacy's 200s; the new side failed them all the same (as a ramp's gates count)."""
    counters, clock = Counters(), Clock()
    found = history(counters, clock)
    found.tick()
    counters.serve("orders", "orders", 27)
    counters.serve("orders", "legacy", 3 + 70)          # 3 the fallback took from orders, 70 meant for legacy
    counters.fallbacks["orders"] = 3
    advance(found, clock)
    orders = found.latest.routes["orders"]
    assert orders["new"]["error_rate"] == 0.1 and orders["legacy"]["error_rate"] == 0.0
    assert orders["new"]["requests_per_s"] == 5.4 and orders["legacy"]["requests_per_s"] == 14.6


def test_a_tick_without_a_config_records_nothing() -> None:
    counters, clock = Counters(), Clock()
    found = History(counters.samples, lambda: None, clock=clock)
    found.tick()
    advance(found, clock)
    assert found.seq == 0 and found.latest is None


@pytest.mark.parametrize(("buckets", "expected"), [
    ({0.1: 0, 0.2: 10, math.inf: 10}, 0.195),         # interpolated inside the bucket, as histogram_quantile
    ({0.1: 10, 0.2: 10, math.inf: 10}, 0.095),
    ({0.1: 0, 0.2: 0, math.inf: 10}, 0.2),            # past the last finite bucket: its bound
    ({0.1: 0, math.inf: 0}, None),
    ({}, None),
])
def test_quantile_reads_cumulative_buckets_as_prometheus_does(buckets: dict, expected: float | None) -> None:
    found = quantile(0.95, list(buckets), list(buckets.values()))
    assert found == (pytest.approx(expected) if expected is not None else None)


def test_rounded_keeps_four_significant_digits() -> None:
    assert [rounded(value) for value in (123456.0, 0.0012345, 0.0, None, math.nan)] == [123500.0, 0.001234, 0.0,
                                                                                       None, None]

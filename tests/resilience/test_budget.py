"""Retry budget: over the last window, retries stay under ratio * requests + min_retries."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilience.budget import RetryBudget


class Clock:
    def __init__(self, now: float = 5000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def spend(budget: RetryBudget, times: int) -> int:
    return sum(budget.try_spend() for _ in range(times))


def test_min_retries_are_allowed_without_any_requests(clock):
    budget = RetryBudget(0.2, clock=clock)
    assert spend(budget, 10) == 3


def test_retries_are_limited_to_ratio_of_requests_plus_min_retries(clock):
    budget = RetryBudget(0.2, clock=clock)
    for _ in range(100):
        budget.record_request()
    assert spend(budget, 100) == 23


def test_a_refused_retry_is_not_counted(clock):
    budget = RetryBudget(0.5, min_retries=0, clock=clock)
    budget.record_request()
    budget.record_request()
    assert budget.try_spend()
    assert not budget.try_spend()
    assert not budget.try_spend()
    budget.record_request()
    budget.record_request()
    assert budget.try_spend()


def test_zero_ratio_allows_only_min_retries(clock):
    budget = RetryBudget(0.0, clock=clock)
    for _ in range(1000):
        budget.record_request()
    assert spend(budget, 10) == 3


def test_spent_retries_age_out_after_the_window(clock):
    budget = RetryBudget(0.2, clock=clock)
    assert spend(budget, 3) == 3
    clock.now += 9.0
    assert not budget.try_spend()
    clock.now += 2.0
    assert spend(budget, 10) == 3


def test_requests_older_than_the_window_no_longer_earn_retries(clock):
    budget = RetryBudget(0.5, min_retries=0, clock=clock)
    for _ in range(10):
        budget.record_request()
    clock.now += 10.0
    assert not budget.try_spend()


def test_requests_within_the_window_still_earn_retries(clock):
    budget = RetryBudget(0.5, min_retries=0, clock=clock)
    for _ in range(10):
        budget.record_request()
    clock.now += 8.9
    assert spend(budget, 10) == 5


def test_bucket_edges_round_towards_fewer_retries():
    """Near the window's edge a retry still counts while the request that earned it may not."""
    clock = Clock(5000.5)
    budget = RetryBudget(1.0, min_retries=0, clock=clock)
    budget.record_request()
    assert budget.try_spend()
    clock.now = 5003.5
    budget.record_request()
    clock.now = 5010.2                 # both 9.7 s old: the retry counts, the request no longer does
    assert not budget.try_spend()
    clock.now = 5011.0                 # the old retry has gone too
    assert budget.try_spend()


def test_a_long_idle_gap_empties_the_window(clock):
    budget = RetryBudget(0.2, clock=clock)
    for _ in range(1000):
        budget.record_request()
    spend(budget, 1000)
    clock.now += 3600.0
    assert spend(budget, 10) == 3


def test_a_new_ratio_applies_at_once(clock):
    budget = RetryBudget(0.2, min_retries=0, clock=clock)
    for _ in range(10):
        budget.record_request()
    assert spend(budget, 10) == 2
    budget.ratio = 0.5
    assert budget.ratio == 0.5
    assert spend(budget, 10) == 3


def test_window_length_is_configurable(clock):
    budget = RetryBudget(1.0, window_s=1.0, min_retries=0, clock=clock)
    budget.record_request()
    clock.now += 1.0
    assert not budget.try_spend()


@pytest.mark.parametrize(
    "kwargs",
    [{"ratio": -0.1}, {"ratio": float("nan")}, {"ratio": 0.2, "window_s": 0}, {"ratio": 0.2, "min_retries": -1}],
)
def test_rejects_impossible_settings(kwargs):
    with pytest.raises(ValueError):
        RetryBudget(**kwargs)


def test_memory_stays_bounded_under_heavy_traffic(clock):
    budget = RetryBudget(0.2, clock=clock)
    for _ in range(100_000):
        clock.now += 0.001
        budget.record_request()
        budget.try_spend()
    assert len(budget._requests) == len(budget._retries) == 11


# A failing upstream: every first attempt wants up to two retries, arrivals spread over time.
arrivals = st.lists(st.tuples(st.floats(0, 3, allow_nan=False), st.integers(0, 2)), max_size=400)


@settings(max_examples=300, deadline=None)
@given(arrivals, st.sampled_from([0.0, 0.1, 0.2, 0.5]), st.floats(0, 1000, allow_nan=False))
def test_retries_never_exceed_budget_over_any_trailing_window(arrivals, ratio, start):
    """At every granted retry, retries in the 10 s before it (inclusive) <= ratio * requests in them + 3."""
    clock = Clock(start)
    budget = RetryBudget(ratio, clock=clock)
    requests: list[float] = []
    retries: list[float] = []
    for gap, wanted in arrivals:
        clock.now += gap
        budget.record_request()
        requests.append(clock.now)
        for _ in range(wanted):
            if budget.try_spend():
                retries.append(clock.now)
                t = clock.now
                in_window = sum(1 for r in retries if t - 10.0 <= r <= t)
                earned = sum(1 for q in requests if t - 10.0 <= q <= t)
                assert in_window <= ratio * earned + 3


@settings(max_examples=200, deadline=None)
@given(arrivals)
def test_failing_upstream_gets_at_most_a_fifth_of_first_attempts_plus_three_in_any_10s(arrivals):
    """The brief's bound: with N first attempts, at most 0.2 * N + 3 retries fall in any 10 s window."""
    clock = Clock()
    budget = RetryBudget(0.2, clock=clock)
    retries: list[float] = []
    for gap, wanted in arrivals:
        clock.now += gap
        budget.record_request()
        retries.extend(clock.now for _ in range(wanted) if budget.try_spend())
    n = len(arrivals)
    for start in retries:
        assert sum(1 for r in retries if start <= r <= start + 10.0) <= 0.2 * n + 3


def test_a_steady_failing_stream_is_held_near_the_ratio(clock):
    budget = RetryBudget(0.2, clock=clock)
    granted = 0
    for _ in range(10_000):          # 100 requests a second for 100 s, each wanting 2 retries
        clock.now += 0.01
        budget.record_request()
        granted += spend(budget, 2)
    assert granted <= 0.2 * 10_000 + 3 * 10
    assert granted >= 0.18 * 10_000

"""Circuit breaker: transitions, half-open trial slots, late outcomes, and what it reports."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilience.breaker import BreakerPermit, BreakerState, CircuitBreaker
from resilience.policy import BreakerPolicy

POLICY = BreakerPolicy(failure_threshold=3, recovery_timeout_s=30.0, success_threshold=2)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def transitions() -> list[tuple[BreakerState, BreakerState]]:
    return []


@pytest.fixture
def breaker(clock: Clock, transitions: list) -> CircuitBreaker:
    return CircuitBreaker(POLICY, clock=clock, on_transition=lambda old, new: transitions.append((old, new)))


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        permit = breaker.try_acquire()
        assert permit is not None
        permit.record_failure()


def open_breaker(breaker: CircuitBreaker) -> None:
    fail(breaker, POLICY.failure_threshold)
    assert breaker.state is BreakerState.OPEN


def half_open_breaker(breaker: CircuitBreaker, clock: Clock) -> None:
    open_breaker(breaker)
    clock.advance(POLICY.recovery_timeout_s)
    assert breaker.state is BreakerState.HALF_OPEN


def test_state_values_are_the_gauge_values():
    assert [int(s) for s in (BreakerState.CLOSED, BreakerState.HALF_OPEN, BreakerState.OPEN)] == [0, 1, 2]


def test_new_breaker_is_closed_and_admits(breaker):
    assert breaker.state is BreakerState.CLOSED
    assert not breaker.is_open()
    assert isinstance(breaker.try_acquire(), BreakerPermit)


def test_closed_breaker_admits_any_number_of_concurrent_requests(breaker):
    permits = [breaker.try_acquire() for _ in range(1000)]
    assert all(permit is not None for permit in permits)


def test_opens_after_failure_threshold_consecutive_failures(breaker, transitions):
    fail(breaker, POLICY.failure_threshold - 1)
    assert breaker.state is BreakerState.CLOSED
    fail(breaker, 1)
    assert breaker.state is BreakerState.OPEN
    assert transitions == [(BreakerState.CLOSED, BreakerState.OPEN)]


def test_success_resets_consecutive_failure_count(breaker):
    fail(breaker, POLICY.failure_threshold - 1)
    breaker.try_acquire().record_success()
    fail(breaker, POLICY.failure_threshold - 1)
    assert breaker.state is BreakerState.CLOSED
    assert breaker.snapshot()["consecutive_failures"] == POLICY.failure_threshold - 1


def test_open_breaker_refuses_and_reports_open(breaker):
    open_breaker(breaker)
    assert breaker.is_open()
    assert breaker.try_acquire() is None


def test_open_stays_open_until_recovery_timeout(breaker, clock):
    open_breaker(breaker)
    clock.advance(POLICY.recovery_timeout_s - 0.001)
    assert breaker.state is BreakerState.OPEN
    assert breaker.try_acquire() is None


def test_reading_state_after_recovery_timeout_turns_half_open(breaker, clock, transitions):
    open_breaker(breaker)
    clock.advance(POLICY.recovery_timeout_s)
    assert breaker.state is BreakerState.HALF_OPEN
    assert transitions[-1] == (BreakerState.OPEN, BreakerState.HALF_OPEN)


def test_try_acquire_after_recovery_timeout_gives_a_trial_permit(breaker, clock, transitions):
    open_breaker(breaker)
    clock.advance(POLICY.recovery_timeout_s + 5)
    assert breaker.try_acquire() is not None
    assert transitions[-1] == (BreakerState.OPEN, BreakerState.HALF_OPEN)


def test_is_open_after_recovery_timeout_turns_half_open(breaker, clock):
    open_breaker(breaker)
    clock.advance(POLICY.recovery_timeout_s)
    assert not breaker.is_open()
    assert breaker.state is BreakerState.HALF_OPEN


def test_half_open_admits_exactly_success_threshold_trials(breaker, clock):
    half_open_breaker(breaker, clock)
    trials = [breaker.try_acquire() for _ in range(POLICY.success_threshold)]
    assert all(permit is not None for permit in trials)
    assert breaker.try_acquire() is None


def test_half_open_is_open_while_every_trial_slot_is_taken(breaker, clock):
    half_open_breaker(breaker, clock)
    first = breaker.try_acquire()
    assert not breaker.is_open()
    breaker.try_acquire()
    assert breaker.is_open()
    first.record_success()
    assert not breaker.is_open()


def test_half_open_closes_after_success_threshold_successes(breaker, clock, transitions):
    half_open_breaker(breaker, clock)
    first, second = breaker.try_acquire(), breaker.try_acquire()
    first.record_success()
    assert breaker.state is BreakerState.HALF_OPEN
    second.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert transitions[-1] == (BreakerState.HALF_OPEN, BreakerState.CLOSED)
    assert breaker.snapshot()["consecutive_failures"] == 0


def test_successful_trial_frees_its_slot_for_the_next_trial(breaker, clock):
    policy = BreakerPolicy(failure_threshold=1, recovery_timeout_s=1.0, success_threshold=3)
    breaker = CircuitBreaker(policy, clock=clock)
    fail(breaker, 1)
    clock.advance(1.0)
    trials = [breaker.try_acquire() for _ in range(3)]
    assert breaker.try_acquire() is None
    trials[0].record_success()
    assert breaker.try_acquire() is not None


def test_failure_in_half_open_reopens_with_fresh_recovery_timeout(breaker, clock, transitions):
    half_open_breaker(breaker, clock)
    clock.advance(7)
    breaker.try_acquire().record_failure()
    assert breaker.state is BreakerState.OPEN
    assert transitions[-1] == (BreakerState.HALF_OPEN, BreakerState.OPEN)
    clock.advance(POLICY.recovery_timeout_s - 0.001)
    assert breaker.state is BreakerState.OPEN
    clock.advance(0.001)
    assert breaker.state is BreakerState.HALF_OPEN


def test_one_failure_reopens_even_after_some_trial_successes(breaker, clock):
    half_open_breaker(breaker, clock)
    first, second = breaker.try_acquire(), breaker.try_acquire()
    first.record_success()
    second.record_failure()
    assert breaker.state is BreakerState.OPEN


def test_released_trial_frees_its_slot_without_counting(breaker, clock):
    half_open_breaker(breaker, clock)
    first, _second = breaker.try_acquire(), breaker.try_acquire()
    first.release()
    third = breaker.try_acquire()
    assert third is not None
    third.record_success()
    assert breaker.state is BreakerState.HALF_OPEN, "a released trial is not a success"


def test_released_permit_in_closed_changes_no_counters(breaker):
    fail(breaker, POLICY.failure_threshold - 1)
    breaker.try_acquire().release()
    assert breaker.snapshot()["consecutive_failures"] == POLICY.failure_threshold - 1
    fail(breaker, 1)
    assert breaker.state is BreakerState.OPEN


def test_late_success_from_before_opening_does_not_close(clock):
    policy = BreakerPolicy(failure_threshold=1, recovery_timeout_s=30.0, success_threshold=1)
    breaker = CircuitBreaker(policy, clock=clock)
    slow = breaker.try_acquire()
    fail(breaker, 1)
    slow.record_success()
    assert breaker.state is BreakerState.OPEN
    assert breaker.retry_after_s() == 30.0


def test_late_success_from_before_opening_does_not_count_as_trial_success(breaker, clock):
    slow = breaker.try_acquire()
    half_open_breaker(breaker, clock)
    slow.record_success()
    trial = breaker.try_acquire()
    trial.record_success()
    assert breaker.state is BreakerState.HALF_OPEN


def test_late_failure_from_before_opening_does_not_reopen_half_open(breaker, clock):
    slow = breaker.try_acquire()
    half_open_breaker(breaker, clock)
    slow.record_failure()
    assert breaker.state is BreakerState.HALF_OPEN


def test_late_failure_from_before_reopening_does_not_extend_open_time(breaker, clock):
    half_open_breaker(breaker, clock)
    first, slow = breaker.try_acquire(), breaker.try_acquire()
    first.record_failure()                          # reopens now
    clock.advance(POLICY.recovery_timeout_s - 1)
    slow.record_failure()                           # arrives late, from the earlier half-open
    clock.advance(1)
    assert breaker.state is BreakerState.HALF_OPEN


def test_late_release_from_earlier_half_open_does_not_free_a_new_trial_slot(breaker, clock):
    half_open_breaker(breaker, clock)
    first, slow = breaker.try_acquire(), breaker.try_acquire()
    first.record_failure()
    clock.advance(POLICY.recovery_timeout_s)
    new_trials = [breaker.try_acquire() for _ in range(POLICY.success_threshold)]
    assert all(permit is not None for permit in new_trials)
    slow.release()
    assert breaker.try_acquire() is None


def test_late_trial_outcome_after_closing_does_not_reopen(breaker, clock):
    policy = BreakerPolicy(failure_threshold=1, recovery_timeout_s=1.0, success_threshold=2)
    breaker = CircuitBreaker(policy, clock=clock)
    fail(breaker, 1)
    clock.advance(1.0)
    first, second = breaker.try_acquire(), breaker.try_acquire()
    first.record_success()
    third = breaker.try_acquire()
    second.record_success()                         # closes
    third.record_failure()                          # from the half-open that just ended
    assert breaker.state is BreakerState.CLOSED


def test_permit_resolves_only_once(breaker):
    fail(breaker, POLICY.failure_threshold - 2)
    permit = breaker.try_acquire()
    permit.record_failure()
    permit.record_failure()
    permit.record_success()
    permit.release()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.snapshot()["consecutive_failures"] == POLICY.failure_threshold - 1


def test_release_after_success_does_not_free_a_second_trial_slot(breaker, clock):
    policy = BreakerPolicy(failure_threshold=1, recovery_timeout_s=1.0, success_threshold=3)
    breaker = CircuitBreaker(policy, clock=clock)
    fail(breaker, 1)
    clock.advance(1.0)
    first = breaker.try_acquire()
    first.record_success()
    first.release()
    assert [breaker.try_acquire() is not None for _ in range(4)] == [True, True, True, False]


def test_retry_after_counts_down_in_whole_seconds_rounded_up(breaker, clock):
    open_breaker(breaker)
    assert breaker.retry_after_s() == 30.0
    clock.advance(0.5)
    assert breaker.retry_after_s() == 30.0
    clock.advance(28.6)
    assert breaker.retry_after_s() == 1.0
    clock.advance(0.8)
    assert breaker.retry_after_s() == 1.0


def test_retry_after_is_one_when_half_open_is_full_and_zero_when_it_admits(breaker, clock):
    half_open_breaker(breaker, clock)
    breaker.try_acquire()
    assert breaker.retry_after_s() == 0.0
    breaker.try_acquire()
    assert breaker.retry_after_s() == 1.0


def test_retry_after_is_zero_when_closed(breaker):
    assert breaker.retry_after_s() == 0.0


def test_snapshot_when_closed(breaker):
    fail(breaker, 1)
    assert breaker.snapshot() == {
        "state": "closed",
        "consecutive_failures": 1,
        "opened_at_age_s": None,
        "retry_after_s": 0.0,
    }


def test_snapshot_when_open(breaker, clock):
    open_breaker(breaker)
    clock.advance(10)
    assert breaker.snapshot() == {
        "state": "open",
        "consecutive_failures": 3,
        "opened_at_age_s": 10.0,
        "retry_after_s": 20.0,
    }


def test_snapshot_turns_half_open_after_recovery_timeout(breaker, clock):
    open_breaker(breaker)
    clock.advance(31)
    snapshot = breaker.snapshot()
    assert snapshot["state"] == "half_open"
    assert snapshot["opened_at_age_s"] == 31.0
    assert snapshot["retry_after_s"] == 0.0


def test_on_transition_reports_every_change_in_order(breaker, clock, transitions):
    half_open_breaker(breaker, clock)
    breaker.try_acquire().record_failure()
    clock.advance(30)
    breaker.try_acquire().record_success()
    breaker.try_acquire().record_success()
    C, H, O = BreakerState.CLOSED, BreakerState.HALF_OPEN, BreakerState.OPEN
    assert transitions == [(C, O), (O, H), (H, O), (O, H), (H, C)]


def test_on_transition_sees_the_new_state(clock):
    seen = []
    breaker = CircuitBreaker(POLICY, clock=clock, on_transition=lambda old, new: seen.append(breaker.state))
    open_breaker(breaker)
    assert seen == [BreakerState.OPEN]


def test_opening_logs_a_warning_with_the_failure_count(clock, caplog):
    breaker = CircuitBreaker(POLICY, clock=clock, name="orders:orders")
    with caplog.at_level(logging.INFO, logger="strangler.breaker"):
        open_breaker(breaker)
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "breaker.opened name=orders:orders failures=3 from=closed"


def test_half_opening_and_closing_log_at_info(breaker, clock, caplog):
    open_breaker(breaker)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="strangler.breaker"):
        clock.advance(30)
        breaker.try_acquire().record_success()
        breaker.try_acquire().record_success()
    assert [(r.levelno, r.getMessage().split()[0]) for r in caplog.records] == [
        (logging.INFO, "breaker.half_opened"),
        (logging.INFO, "breaker.closed"),
    ]


@pytest.mark.parametrize(
    "policy",
    [
        BreakerPolicy(failure_threshold=0),
        BreakerPolicy(success_threshold=0),
        BreakerPolicy(recovery_timeout_s=-1),
    ],
)
def test_rejects_a_policy_that_could_never_open_or_close(policy):
    with pytest.raises(ValueError):
        CircuitBreaker(policy)


operations = st.lists(
    st.one_of(
        st.just(("acquire", 0)),
        st.tuples(st.sampled_from(["success", "failure", "failure", "release"]), st.integers(0, 20)),
        st.tuples(st.just("wait"), st.sampled_from([1, 5, 10])),
    ),
    max_size=300,
)

RESOLVE = {"success": "record_success", "failure": "record_failure", "release": "release"}


@settings(max_examples=500, deadline=None)
@given(operations, st.integers(1, 3), st.integers(1, 3))
def test_any_order_of_outcomes_keeps_half_open_within_its_trials(ops, failure_threshold, success_threshold):
    """Whatever order outcomes arrive in: half-open never has more than success_threshold trials out,
    is_open() is True exactly when try_acquire() refuses, and an outcome from an earlier state changes nothing."""
    clock = Clock()
    policy = BreakerPolicy(
        failure_threshold=failure_threshold, recovery_timeout_s=10.0, success_threshold=success_threshold
    )
    trials: set[int] = set()   # unresolved permits taken in the current half-open spell
    spell = 0                  # transitions so far

    def on_transition(old, new):
        nonlocal spell
        trials.clear()
        spell += 1

    breaker = CircuitBreaker(policy, clock=clock, on_transition=on_transition)
    outstanding: list[tuple[BreakerPermit, int]] = []
    for op, arg in ops:
        if op == "acquire":
            state = breaker.state
            refuses = breaker.is_open()
            permit = breaker.try_acquire()
            assert (permit is None) == refuses
            if permit is not None:
                outstanding.append((permit, spell))
                if state is BreakerState.HALF_OPEN:
                    trials.add(id(permit))
        elif op == "wait":
            clock.advance(arg)
        elif outstanding:
            permit, taken_in = outstanding.pop(arg % len(outstanding))
            trials.discard(id(permit))
            stale = taken_in != spell
            before = (breaker.state, breaker.snapshot()["consecutive_failures"], breaker.is_open())
            getattr(permit, RESOLVE[op])()
            if stale:
                assert (breaker.state, breaker.snapshot()["consecutive_failures"], breaker.is_open()) == before
        if breaker.state is BreakerState.HALF_OPEN:
            assert len(trials) <= success_threshold
        else:
            assert not trials

"""Circuit breaker: stop calling an upstream that keeps failing, probe it after a pause."""

from __future__ import annotations

import enum
import logging
import math
import time
from collections.abc import Callable
from typing import Any

from .policy import BreakerPolicy

# Under the project's log namespace, as domain_events' loggers are: a side that runs on
# its own shows `strangler.*` lines, and the proxy's logs keep the name they always had.
log = logging.getLogger("strangler.breaker")


class BreakerState(enum.IntEnum):
    """Breaker states; the values are what the state gauge reports."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


_CLOSED = BreakerState.CLOSED
_HALF_OPEN = BreakerState.HALF_OPEN
_OPEN = BreakerState.OPEN
_STATE_NAMES = {_CLOSED: "closed", _HALF_OPEN: "half_open", _OPEN: "open"}

OnTransition = Callable[[BreakerState, BreakerState], None]


class CircuitBreaker:
    """Closed -> open after consecutive failures, open -> half-open after a pause, half-open -> closed after trial successes."""

    __slots__ = (
        "policy",
        "_clock",
        "_on_transition",
        "_name_field",
        "_state",
        "_generation",
        "_consecutive_failures",
        "_opened_at",
        "_trials_in_flight",
        "_trial_successes",
    )

    def __init__(
        self,
        policy: BreakerPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_transition: OnTransition | None = None,
        name: str | None = None,
    ) -> None:
        if policy.failure_threshold < 1 or policy.success_threshold < 1 or policy.recovery_timeout_s < 0:
            raise ValueError(f"invalid breaker policy: {policy!r}")
        self.policy = policy
        self._clock = clock
        self._on_transition = on_transition
        self._name_field = f" name={name}" if name else ""
        self._state = _CLOSED
        # Bumped on every transition. A permit remembers the generation it was
        # taken in, and its outcome only counts while that generation is current:
        # a result from an earlier state must not close, reopen or extend anything.
        self._generation = 0
        self._consecutive_failures = 0
        self._opened_at: float | None = None
        self._trials_in_flight = 0
        self._trial_successes = 0

    @property
    def state(self) -> BreakerState:
        """The current state; an open breaker whose recovery timeout has passed turns half-open here."""
        if self._state is _OPEN:
            self._half_open_if_recovered()
        return self._state

    def is_open(self) -> bool:
        """True when a request would be refused now: open, or half-open with every trial slot taken."""
        state = self.state
        if state is _CLOSED:
            return False
        if state is _OPEN:
            return True
        return self._trials_in_flight >= self.policy.success_threshold

    def try_acquire(self) -> BreakerPermit | None:
        """A permit to send one request, or None to refuse it."""
        state = self.state
        if state is _CLOSED:
            return BreakerPermit(self, self._generation)
        if state is _OPEN or self._trials_in_flight >= self.policy.success_threshold:
            return None
        self._trials_in_flight += 1
        return BreakerPermit(self, self._generation)

    def retry_after_s(self) -> float:
        """Whole seconds a refused client should wait: at least 1 while refusing, 0 when closed."""
        state = self.state
        if state is _CLOSED:
            return 0.0
        if state is _HALF_OPEN:
            return 1.0 if self._trials_in_flight >= self.policy.success_threshold else 0.0
        assert self._opened_at is not None
        remaining = self._opened_at + self.policy.recovery_timeout_s - self._clock()
        return float(max(1, math.ceil(remaining)))

    def snapshot(self) -> dict[str, Any]:
        """The live state for the admin API."""
        state = self.state
        return {
            "state": _STATE_NAMES[state],
            "consecutive_failures": self._consecutive_failures,
            "opened_at_age_s": None if self._opened_at is None else self._clock() - self._opened_at,
            "retry_after_s": self.retry_after_s(),
        }

    def __repr__(self) -> str:
        return f"<CircuitBreaker{self._name_field} {_STATE_NAMES[self._state]} failures={self._consecutive_failures}>"

    # Outcomes, reported by permits.

    def _succeeded(self, generation: int) -> None:
        if generation != self._generation:
            return
        if self._state is _CLOSED:
            self._consecutive_failures = 0
            return
        # A current-generation permit is never from OPEN: permits are not issued there.
        self._trials_in_flight -= 1
        self._trial_successes += 1
        if self._trial_successes >= self.policy.success_threshold:
            self._move_to(_CLOSED)

    def _failed(self, generation: int) -> None:
        if generation != self._generation:
            return
        self._consecutive_failures += 1
        if self._state is _HALF_OPEN or self._consecutive_failures >= self.policy.failure_threshold:
            self._move_to(_OPEN)

    def _released(self, generation: int) -> None:
        if generation == self._generation and self._state is _HALF_OPEN:
            self._trials_in_flight -= 1

    # Transitions.

    def _half_open_if_recovered(self) -> None:
        assert self._opened_at is not None
        if self._clock() - self._opened_at >= self.policy.recovery_timeout_s:
            self._move_to(_HALF_OPEN)

    def _move_to(self, new: BreakerState) -> None:
        old = self._state
        self._state = new
        self._generation += 1
        if new is _OPEN:
            self._opened_at = self._clock()
            log.warning(
                "breaker.opened%s failures=%d from=%s",
                self._name_field,
                self._consecutive_failures,
                _STATE_NAMES[old],
            )
        elif new is _HALF_OPEN:
            self._trials_in_flight = 0
            self._trial_successes = 0
            log.info("breaker.half_opened%s trials=%d", self._name_field, self.policy.success_threshold)
        else:
            successes = self._trial_successes
            self._consecutive_failures = 0
            self._opened_at = None
            self._trials_in_flight = 0
            self._trial_successes = 0
            log.info("breaker.closed%s successes=%d", self._name_field, successes)
        # State is consistent before the caller hears of it, so a callback that
        # raises (or reads the breaker) sees the new state.
        if self._on_transition is not None:
            self._on_transition(old, new)


class BreakerPermit:
    """Leave to send one request; resolves once, later calls are ignored."""

    __slots__ = ("_breaker", "_generation", "_resolved")

    def __init__(self, breaker: CircuitBreaker, generation: int) -> None:
        self._breaker = breaker
        self._generation = generation
        self._resolved = False

    def record_success(self) -> None:
        """The upstream answered well."""
        if not self._resolved:
            self._resolved = True
            self._breaker._succeeded(self._generation)

    def record_failure(self) -> None:
        """The upstream failed (connect error, timeout, 5xx)."""
        if not self._resolved:
            self._resolved = True
            self._breaker._failed(self._generation)

    def release(self) -> None:
        """A neutral end (the client went away): frees a half-open trial slot, counts nothing."""
        if not self._resolved:
            self._resolved = True
            self._breaker._released(self._generation)

"""Retries: how many attempts, what comes back when they run out, and the pauses between them."""

from __future__ import annotations

import pytest

from resilience.policy import RetryPolicy
from resilience.retry import backoff_s, call_with_retries

POLICY = RetryPolicy(attempts=3, backoff_initial_s=0.1, backoff_max_s=0.3)


class Recorder:
    """Attempts that answer from a script (a value, or an exception to raise), and the pauses taken."""

    def __init__(self, *outcomes: object) -> None:
        self.outcomes = list(outcomes)
        self.numbers: list[int] = []
        self.asked: list[tuple[object | None, BaseException | None]] = []
        self.pauses: list[float] = []

    async def attempt(self, number: int) -> object:
        self.numbers.append(number)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def retry_unless_ok(self, result: object | None, error: BaseException | None) -> bool:
        self.asked.append((result, error))
        return result != "ok"

    async def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)


async def call(recorder: Recorder, policy: RetryPolicy = POLICY) -> object:
    return await call_with_retries(recorder.attempt, policy, recorder.retry_unless_ok, sleep=recorder.sleep)


async def test_a_first_success_is_returned_without_a_pause() -> None:
    recorder = Recorder("ok")
    assert await call(recorder) == "ok"
    assert recorder.numbers == [1] and recorder.pauses == []


async def test_attempts_are_numbered_and_a_later_success_is_returned() -> None:
    recorder = Recorder(ConnectionError("refused"), "busy", "ok")
    assert await call(recorder) == "ok"
    assert recorder.numbers == [1, 2, 3] and len(recorder.pauses) == 2


async def test_when_attempts_run_out_the_last_answer_comes_back_as_it_is() -> None:
    recorder = Recorder("busy", "busy", "still busy")
    assert await call(recorder) == "still busy"
    # Asked only while another attempt was allowed: a yes on the last one would spend budget for nothing.
    assert recorder.numbers == [1, 2, 3] and len(recorder.asked) == 2


async def test_when_attempts_run_out_the_last_error_is_raised() -> None:
    last = ConnectionError("second")
    recorder = Recorder(ConnectionError("first"), "busy", last)
    with pytest.raises(ConnectionError) as raised:
        await call(recorder)
    assert raised.value is last


async def test_an_error_not_worth_retrying_is_raised_at_once() -> None:
    recorder = Recorder(ValueError("a bug"))

    def never(result: object | None, error: BaseException | None) -> bool:
        return False

    with pytest.raises(ValueError):
        await call_with_retries(recorder.attempt, POLICY, never, sleep=recorder.sleep)
    assert recorder.numbers == [1] and recorder.pauses == []


async def test_one_attempt_means_no_retry_and_no_question() -> None:
    recorder = Recorder("busy")
    assert await call(recorder, RetryPolicy(attempts=1)) == "busy"
    assert recorder.asked == []


@pytest.mark.parametrize(("attempt_number", "jitter", "expected_s"), [
    (1, 0.0, 0.1),        # backoff_initial_s
    (1, 1.0, 0.2),        # plus at most backoff_initial_s of jitter
    (2, 0.5, 0.25),       # doubled per attempt
    (3, 0.0, 0.3),        # at most backoff_max_s
    (10_000, 1.0, 0.3),   # however many attempts
])
def test_backoff_doubles_with_jitter_up_to_its_maximum(attempt_number: int, jitter: float, expected_s: float) -> None:
    def uniform(low: float, high: float) -> float:
        return low + (high - low) * jitter

    assert backoff_s(POLICY, attempt_number, uniform=uniform) == pytest.approx(expected_s)


async def test_the_pauses_follow_the_backoff() -> None:
    recorder = Recorder("busy", "busy", "busy")
    await call(recorder, RetryPolicy(attempts=3, backoff_initial_s=1.0, backoff_max_s=100.0))
    assert 1.0 <= recorder.pauses[0] <= 2.0 and 2.0 <= recorder.pauses[1] <= 3.0

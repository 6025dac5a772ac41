"""Retries with exponential backoff and jitter: the only module that imports tenacity."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    retry_if_result,
    stop_after_attempt,
    wait_exponential_jitter,
)

from .config.model import RetryPolicy

T = TypeVar("T")
# Decides from one attempt's result or error whether another attempt is worth it
# (and may spend retry budget when it says yes).
ShouldRetry = Callable[[object | None, BaseException | None], bool]


def backoff(policy: RetryPolicy) -> wait_exponential_jitter:
    return wait_exponential_jitter(
        multiplier=policy.backoff_initial_s, max=policy.backoff_max_s, jitter=policy.backoff_initial_s,
    )


async def call_with_retries(
    attempt: Callable[[int], Awaitable[T]],
    policy: RetryPolicy,
    should_retry: ShouldRetry,
) -> T:
    """Run attempt(1), attempt(2)... while `should_retry` says so, at most policy.attempts in all.

    Returns the last result or raises the last error, so that an upstream's own
    answer (say a 503) reaches the client as it is when retries run out.
    """
    # Most requests succeed at once: keep tenacity's machinery off that path.
    try:
        result = await attempt(1)
    except Exception as exc:
        if policy.attempts <= 1 or not should_retry(None, exc):
            raise
    else:
        if policy.attempts <= 1 or not should_retry(result, None):
            return result

    wait = backoff(policy)
    await asyncio.sleep(wait(SimpleNamespace(attempt_number=1)))
    number = 1
    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.attempts - 1),
        # tenacity counts from this loop's first attempt, which is the second in all.
        wait=lambda state: wait(SimpleNamespace(attempt_number=state.attempt_number + 1)),
        retry=retry_if_exception(lambda exc: should_retry(None, exc))
        | retry_if_result(lambda res: should_retry(res, None)),
        retry_error_callback=lambda state: state.outcome.result(),
    )
    async for tenacity_attempt in retrying:
        with tenacity_attempt:
            number += 1
            result = await attempt(number)
        if not tenacity_attempt.retry_state.outcome.failed:  # type: ignore[union-attr]
            tenacity_attempt.retry_state.set_result(result)
    outcome = tenacity_attempt.retry_state.outcome  # type: ignore[possibly-undefined]
    return outcome.result()  # type: ignore[union-attr,return-value]

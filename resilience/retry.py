"""Retries: exponential backoff with jitter, and the loop that runs attempts until one is worth keeping."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from .policy import RetryPolicy

T = TypeVar("T")
# Decides from one attempt's result or error whether another attempt is worth it
# (and may spend retry budget when it says yes).
ShouldRetry = Callable[[object | None, BaseException | None], bool]
Sleep = Callable[[float], Awaitable[object]]


def backoff_s(policy: RetryPolicy, attempt_number: int, *,
              uniform: Callable[[float, float], float] = random.uniform) -> float:
    """The pause after attempt `attempt_number` (1 for the first) failed.

    backoff_initial_s doubled per attempt, plus up to backoff_initial_s of jitter, at most backoff_max_s.
    """
    jitter_s = uniform(0.0, policy.backoff_initial_s)
    try:
        delay_s = policy.backoff_initial_s * 2.0 ** (attempt_number - 1) + jitter_s
    except OverflowError:
        delay_s = policy.backoff_max_s
    return max(0.0, min(delay_s, policy.backoff_max_s))


async def call_with_retries(
    attempt: Callable[[int], Awaitable[T]],
    policy: RetryPolicy,
    should_retry: ShouldRetry,
    *,
    sleep: Sleep = asyncio.sleep,
) -> T:
    """Run attempt(1), attempt(2)... while `should_retry` says so, at most policy.attempts in all.

    Returns the last result or raises the last error, so that an upstream's own
    answer (say a 503) reaches the client as it is when retries run out.
    `should_retry` is asked only while another attempt is allowed.
    """
    # A plain loop: tenacity's AsyncRetrying cost about 38 µs per call even when the
    # first attempt succeeds, a quarter of what the proxy spends on a request.
    number = 1
    while True:
        try:
            result = await attempt(number)
        except Exception as exc:
            if number >= policy.attempts or not should_retry(None, exc):
                raise
        else:
            if number >= policy.attempts or not should_retry(result, None):
                return result
        await sleep(backoff_s(policy, number))
        number += 1

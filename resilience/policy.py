"""How hard to try and when to stop: retry and breaker policies as frozen values."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_RETRY_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    attempts: int = 3                          # tries in all, the first included
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 1.0
    retry_on_connect_error: bool = True
    retry_on_timeout: bool = True
    retry_on_statuses: frozenset[int] = frozenset({502, 503, 504})
    methods: frozenset[str] = DEFAULT_RETRY_METHODS
    budget_ratio: float = 0.2                  # extra load retries may add per upstream


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerPolicy:
    failure_threshold: int = 5
    recovery_timeout_s: float = 30.0
    success_threshold: int = 2

"""Why a call to another service got no answer: refused by its breaker, or a transport failure."""

from __future__ import annotations

import enum


class Failure(enum.Enum):
    """A transport failure: its flag for logs and metrics (the proxy's own flags) and a title."""

    CONNECT_ERROR = ("connect_error", "Service refused the connection")
    CONNECT_TIMEOUT = ("connect_timeout", "Service connect timed out")
    POOL_TIMEOUT = ("pool_timeout", "No connection to the service available in time")
    TIMEOUT = ("timeout", "Service did not answer in time")
    UPSTREAM_RESET = ("upstream_reset", "Service closed the connection")
    PROTOCOL_ERROR = ("protocol_error", "Service answered garbage")

    def __init__(self, flag: str, title: str) -> None:
        self.flag = flag
        self.title = title


# Failures after which no byte of the request can have reached the service.
_NEVER_SENT = frozenset({Failure.CONNECT_ERROR, Failure.CONNECT_TIMEOUT, Failure.POOL_TIMEOUT})


class CallError(Exception):
    """A call that got no answer from the service; `detail` says why in a sentence."""

    def __init__(self, detail: str, *, service: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.service = service


class CircuitOpen(CallError):
    """The service's breaker refuses calls for now: nothing was sent."""

    def __init__(self, detail: str, *, service: str, retry_after_s: float) -> None:
        super().__init__(detail, service=service)
        self.retry_after_s = retry_after_s


class CallFailed(CallError):
    """A transport failure that outlived its retries."""

    def __init__(self, detail: str, *, service: str, reason: Failure) -> None:
        super().__init__(detail, service=service)
        self.reason = reason

    @property
    def reached_service(self) -> bool:
        """False when no byte of the request can have reached the service; else its outcome is unknown."""
        return self.reason not in _NEVER_SENT

"""Refusals the proxy makes itself, each with a reason that knows its status."""

from __future__ import annotations

import enum


class Reason(enum.Enum):
    """Why the proxy answered instead of an upstream (Envoy-style response flags)."""

    NO_ROUTE = ("no_route", 404, "No route matches")
    BAD_PATH = ("bad_path", 400, "Path cannot be normalized safely")
    BAD_REQUEST = ("bad_request", 400, "Bad request")
    METHOD_NOT_ALLOWED = ("method_not_allowed", 405, "Method not allowed")
    REQUEST_TIMEOUT = ("request_timeout", 408, "Request not received in time")
    BODY_TOO_LARGE = ("body_too_large", 413, "Request body too large")
    URI_TOO_LONG = ("uri_too_long", 414, "Request target too long")
    HEADERS_TOO_LARGE = ("headers_too_large", 431, "Request header fields too large")
    HTTP_VERSION = ("http_version_not_supported", 505, "HTTP version not supported")
    CIRCUIT_OPEN = ("circuit_open", 503, "Circuit open")
    BULKHEAD_FULL = ("bulkhead_full", 503, "Upstream at its concurrency limit")
    OVERLOADED = ("overloaded", 503, "Proxy overloaded")
    POOL_TIMEOUT = ("pool_timeout", 503, "No upstream connection available in time")
    CONNECT_ERROR = ("connect_error", 502, "Upstream refused the connection")
    TLS_ERROR = ("tls_error", 502, "Upstream TLS handshake or certificate check failed")
    UPSTREAM_RESET = ("upstream_reset", 502, "Upstream closed the connection")
    PROTOCOL_ERROR = ("protocol_error", 502, "Upstream answered garbage")
    CONNECT_TIMEOUT = ("connect_timeout", 504, "Upstream connect timed out")
    TIMEOUT = ("timeout", 504, "Upstream did not answer in time")
    PART_REFUSED = ("part_refused", 400, "A required part answered with a client error")   # its status is the part's
    PART_FAILED = ("part_failed", 502, "A required part answered with an error or not with JSON")

    def __init__(self, flag: str, status: int, title: str) -> None:
        self.flag = flag
        self.status = status
        self.title = title


class ProxyError(Exception):
    """A request the proxy answers itself; `reason` decides the status."""

    reason: Reason = Reason.BAD_REQUEST
    part: str | None = None       # the part of a composite answer that caused it

    def __init__(
        self,
        detail: str = "",
        *,
        route: str | None = None,
        upstream: str | None = None,
        reason: Reason | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        if reason is not None:
            self.reason = reason
        super().__init__(detail or self.reason.title)
        self.detail = detail or self.reason.title
        self.route = route
        self.upstream = upstream
        self.retry_after_s = retry_after_s

    @property
    def status(self) -> int:
        return self.reason.status


class NoRoute(ProxyError):
    reason = Reason.NO_ROUTE


class BadPath(ProxyError):
    reason = Reason.BAD_PATH


class BadRequest(ProxyError):
    reason = Reason.BAD_REQUEST


class MethodNotAllowed(ProxyError):
    """A method a route does not answer; `allow` lists the ones it does."""

    reason = Reason.METHOD_NOT_ALLOWED

    def __init__(self, detail: str, *, allow: bytes, route: str | None = None) -> None:
        super().__init__(detail, route=route)
        self.allow = allow


class PartRefused(ProxyError):
    """A required part of a composite answer answered 4xx: the whole answers with the same status."""

    reason = Reason.PART_REFUSED

    def __init__(self, detail: str, *, status: int, route: str, upstream: str, part: str) -> None:
        super().__init__(detail, route=route, upstream=upstream)
        self.part = part
        self._status = status

    @property
    def status(self) -> int:
        return self._status


class CircuitOpen(ProxyError):
    reason = Reason.CIRCUIT_OPEN


class BulkheadFull(ProxyError):
    reason = Reason.BULKHEAD_FULL


class UpstreamError(ProxyError):
    """A transport failure talking to an upstream; counts against its breaker."""

    reason = Reason.PROTOCOL_ERROR

    @property
    def reached_upstream(self) -> bool:
        """False when no byte of the request can have reached the upstream."""
        return self.reason not in (Reason.CONNECT_ERROR, Reason.CONNECT_TIMEOUT, Reason.POOL_TIMEOUT, Reason.TLS_ERROR)


class ClientDisconnected(Exception):
    """The client went away; not the upstream's fault, nothing to answer."""


class ResponseAborted(Exception):
    """The upstream failed mid-body: the client's response must end as broken, never as complete."""

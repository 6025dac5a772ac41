"""Answers made by the proxy itself: application/problem+json (RFC 9457)."""

from __future__ import annotations

import json
import math
from email.utils import formatdate

from .errors import MethodNotAllowed, ProxyError, Reason

PROBLEM_TYPE_BASE = "https://strangler.dev/problems/"
# Every method but CONNECT and TRACE, which the proxy never forwards (routes may narrow these).
ALLOWED_METHODS = b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"


def problem_body(error: ProxyError) -> bytes:
    problem = {
        "type": PROBLEM_TYPE_BASE + error.reason.flag.replace("_", "-"),
        "title": error.reason.title,
        "status": error.status,
        "detail": error.detail,
        "route": error.route,
        "upstream": error.upstream,
        "reason": error.reason.flag,
    }
    if error.part is not None:
        problem["part"] = error.part
    return json.dumps(problem).encode()


def problem_headers(error: ProxyError, body: bytes, *, expose: bool) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        (b"date", formatdate(usegmt=True).encode()),
        (b"cache-control", b"no-store"),
    ]
    if error.reason is Reason.METHOD_NOT_ALLOWED:
        # RFC 9110 15.5.6: a 405 says what is
        headers.append((b"allow", error.allow if isinstance(error, MethodNotAllowed) else ALLOWED_METHODS))
    if error.retry_after_s is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(error.retry_after_s))).encode()))
    if expose:
        headers.append((b"x-strangler-route", (error.route or "").encode()))
        headers.append((b"x-strangler-upstream", (error.upstream or "").encode()))
    if error.status in (400, 408, 413):
        # A request the proxy could not read safely, or whose body it did not read (all of):
        # do not reuse the connection, whose next bytes may be that body.
        headers.append((b"connection", b"close"))
    return headers


def problem_document(status: int, title: str, detail: str, **extra: object) -> bytes:
    """A problem+json body for answers that are not the data path's (the admin API's)."""
    slug = "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")
    return json.dumps({"type": PROBLEM_TYPE_BASE + slug, "title": title, "status": status, "detail": detail,
                       **extra}).encode()

"""Sticky keys: what identifies a client for the split, per the route's `sticky` rule."""

from __future__ import annotations

import re
import secrets

from .config.model import COHORT_COOKIE, Sticky
from .routing import RequestHead

_COHORT_ID = re.compile(r"[0-9a-f]{16,64}")
COHORT_MAX_AGE_S = 365 * 24 * 3600


def cookie_value(request: RequestHead, name: str) -> str | None:
    """The value of one cookie from the request's Cookie header(s)."""
    for header_name, header_value in request.raw_headers:
        if header_name.lower() != b"cookie":
            continue
        for pair in header_value.decode("latin-1").split(";"):
            key, sep, value = pair.strip().partition("=")
            if sep and key == name:
                return value.strip().strip('"')
    return None


def cohort_of(request: RequestHead) -> str | None:
    """The client's cohort id, if it sent a well-formed one."""
    cohort = cookie_value(request, COHORT_COOKIE)
    return cohort if cohort is not None and _COHORT_ID.fullmatch(cohort) else None


class StickyKey:
    """The key of one request, and whether the proxy must issue a cohort cookie."""

    __slots__ = ("key", "new_cohort")

    def __init__(self, key: str | None, new_cohort: str | None = None) -> None:
        self.key = key
        self.new_cohort = new_cohort


def sticky_key(sticky: Sticky, request: RequestHead, client_ip: str | None) -> StickyKey:
    kind = sticky.kind
    if kind == "cohort":
        cohort = cohort_of(request)
        if cohort is not None:
            return StickyKey(cohort)
        # A new client: its cohort id is the key from this very request on.
        cohort = secrets.token_hex(16)
        return StickyKey(cohort, new_cohort=cohort)
    if kind == "cookie":
        return StickyKey(cookie_value(request, sticky.name or "") or None)
    if kind == "header":
        return StickyKey(request.header((sticky.name or "").lower()) or None)
    if kind == "client-ip":
        return StickyKey(client_ip)
    return StickyKey(None)


def cohort_set_cookie(cohort: str, secure: bool) -> bytes:
    cookie = f"{COHORT_COOKIE}={cohort}; Path=/; Max-Age={COHORT_MAX_AGE_S}; HttpOnly; SameSite=Lax"
    if secure:
        cookie += "; Secure"
    return cookie.encode("ascii")

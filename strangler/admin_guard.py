"""Who may change things through the admin listener: the admin token for every POST, and no cross-site POST.

Reading (metrics, health, /routes, /ramps) needs nothing, except under the
private prefixes (the shares a controller serves its instances), which need the
token as a POST does. A POST needs
`Authorization: Bearer TOKEN` when a token is set (`admin.token`, or the
STRANGLER_ADMIN_TOKEN environment variable, which takes its place), else 401;
a POST whose Origin is not the listener's own gets 403, so a page in a browser
cannot drive the admin API; a POST with no Origin (curl, scripts) is judged by
the token alone.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import Response

from .config.model import Config
from .problem import problem_document

TOKEN_ENV = "STRANGLER_ADMIN_TOKEN"
_READS = frozenset({"GET", "HEAD", "OPTIONS"})
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


def admin_token(config: Config | None) -> str | None:
    return os.environ.get(TOKEN_ENV) or (config.admin_token if config is not None else None)


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_refusal(host: str, *, explicit: bool, token: str | None) -> str | None:
    """Why the admin listener must not bind `host`, or None: without a token only loopback, unless asked for."""
    if token or explicit or is_loopback(host):
        return None
    return (f"the admin listener would bind {host} without an admin token: anyone who reaches it could roll "
            f"back or reload. Set admin.token (or {TOKEN_ENV}), or pass --admin-host {host} to bind it anyway")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def own_origin(origin: str, host_header: str, bound_host: str, *, token_set: bool) -> bool:
    """Whether a browser's Origin is the admin listener itself (a page it served), not another site."""
    try:
        parsed = urlsplit(origin)
        hostname = parsed.hostname or ""
    except ValueError:
        return False
    if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.netloc.lower() != host_header.lower():
        return False
    # A hostile page can point its own name at this address (DNS rebinding): its Origin then matches
    # the Host it sends. Without a token to stop it, only names that cannot be rebound are the listener's.
    return token_set or hostname == bound_host.lower() or is_loopback(hostname) or _is_ip(hostname)


def _refuse(status: int, title: str, detail: str, **headers: str) -> Response:
    return Response(problem_document(status, title, detail), status_code=status,
                    media_type="application/problem+json", headers=headers)


class AdminGuard:
    """ASGI middleware in front of the admin app."""

    def __init__(self, app: Any, token: Callable[[], str | None], bound_host: str,
                 private: tuple[str, ...] = ()) -> None:
        self.app = app
        self.token = token
        self.bound_host = bound_host
        self.private = private          # path prefixes whose reads need the token too

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and (scope["method"] not in _READS or scope["path"].startswith(self.private)):
            refusal = self._refusal(Headers(scope=scope))
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, headers: Headers) -> Response | None:
        token = self.token()
        origin = headers.get("origin")
        if origin is not None and not own_origin(origin, headers.get("host", ""), self.bound_host,
                                                 token_set=token is not None):
            return _refuse(403, "Cross-site request refused", f"Origin {origin!r} is not this admin listener: "
                           "admin changes are refused from other sites' pages")
        if token is None:
            return None
        scheme, _, given = headers.get("authorization", "").partition(" ")
        # Compare digests: constant time, and the token's length does not show either.
        if scheme.lower() != "bearer" or not hmac.compare_digest(hashlib.sha256(given.strip().encode()).digest(),
                                                                 hashlib.sha256(token.encode()).digest()):
            return _refuse(401, "Admin token required", "send Authorization: Bearer TOKEN with the admin token "
                           f"(admin.token or {TOKEN_ENV})", **{"WWW-Authenticate": 'Bearer realm="strangler admin"'})
        return None

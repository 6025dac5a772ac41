"""Request plumbing every page shares: signed sessions, the CSRF cookie, and APPEND_SLASH."""

from __future__ import annotations

import re
from dataclasses import dataclass

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, RedirectResponse
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from legacy_monolith import settings, signing
from legacy_monolith.accounts import models as accounts
from legacy_monolith.db import Database
from legacy_monolith.forwarded import build_absolute_uri
from legacy_monolith.shortcuts import json_error

SESSION_SALT = "legacy_monolith.sessions"
CSRF_COOKIE_AGE_S = 365 * 24 * 3600
_HEX_SECRET = re.compile(r"^[0-9a-f]{32}$")


@dataclass(slots=True)
class CsrfState:
    secret: str | None
    changed: bool = False


def _cookie(name: str, value: str, *, max_age_s: int, http_only: bool) -> str:
    flags = "; HttpOnly" if http_only else ""
    return f"{name}={value}; Max-Age={max_age_s}; Path=/; SameSite=Lax{flags}"


class SessionMiddleware:
    """Loads the session and the user before the view; writes changed cookies after it."""

    def __init__(self, app: ASGIApp, database: Database) -> None:
        self.app = app
        self.database = database

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # WebSockets (the live order page) know their user too; they set no cookies.
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        cookies = HTTPConnection(scope).cookies
        try:
            session = signing.loads(
                cookies.get(settings.SESSION_COOKIE_NAME, ""), salt=SESSION_SALT, max_age_s=settings.SESSION_COOKIE_AGE_S
            )
        except signing.BadSignature:
            session = {}
        original = dict(session)
        scope["session"] = session
        secret = cookies.get(settings.CSRF_COOKIE_NAME, "")
        scope["csrf"] = CsrfState(secret=secret if _HEX_SECRET.match(secret) else None)
        user_id = session.get("user_id")
        scope["user"] = accounts.get_user(self.database, user_id) if user_id else None

        async def send_with_cookies(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if scope["session"] != original:
                    value = signing.dumps(scope["session"], salt=SESSION_SALT) if scope["session"] else ""
                    age = settings.SESSION_COOKIE_AGE_S if scope["session"] else 0
                    headers.append("set-cookie", _cookie(settings.SESSION_COOKIE_NAME, value, max_age_s=age, http_only=True))
                if scope["csrf"].changed:
                    cookie = _cookie(settings.CSRF_COOKIE_NAME, scope["csrf"].secret, max_age_s=CSRF_COOKIE_AGE_S, http_only=False)
                    headers.append("set-cookie", cookie)
            await send(message)

        await self.app(scope, receive, send_with_cookies)


async def append_slash_or_not_found(scope: Scope, receive: Receive, send: Send) -> None:
    """The router's last resort: Django's APPEND_SLASH redirect, else a 404."""
    if scope["type"] == "websocket":
        await WebSocketClose()(scope, receive, send)       # no such socket: the handshake gets 403
        return
    request = Request(scope)
    path = scope["path"]
    if settings.APPEND_SLASH and not path.endswith("/"):
        with_slash = {**scope, "path": path + "/"}
        if any(route.matches(with_slash)[0] is not Match.NONE for route in scope["router"].routes):
            query = f"?{request.url.query}" if request.url.query else ""
            raw_path = scope.get("raw_path", path.encode()).decode("latin-1")
            location = build_absolute_uri(request, raw_path + "/" + query)
            response = RedirectResponse(location, status_code=301)
            await response(scope, receive, send)
            return
    if path.startswith("/api/"):
        response = json_error(404, "not_found", f"No API endpoint at {path}")
    else:
        response = HTMLResponse("<!doctype html><title>Not Found</title><h1>Not Found</h1>", status_code=404)
    await response(scope, receive, send)

"""The helpers views reach for, after django.shortcuts: render, redirect, JSON, absolute URLs."""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from legacy_monolith import csrf, settings
from legacy_monolith.db import Database
from legacy_monolith.forwarded import build_absolute_uri
from legacy_monolith.templating import mark_safe, render_to_string


def database(request: Request) -> Database:
    return request.app.state.database


def redirect(request: Request, location: str, *, permanent: bool = False) -> RedirectResponse:
    status = 301 if permanent else 302
    return RedirectResponse(build_absolute_uri(request, location), status_code=status)


def render(
    request: Request, template_name: str, context: dict[str, Any] | None = None, *, title: str, status: int = 200
) -> HTMLResponse:
    """A page: the template rendered into base.html, with the user and a CSRF token at hand."""
    context = {"request": request, "user": request.scope.get("user"), **(context or {})}
    context["csrf_token"] = csrf.get_token(request)
    content = render_to_string(template_name, context)
    page = render_to_string("base.html", {**context, "title": title, "content": mark_safe(content)})
    return HTMLResponse(page, status_code=status)


def json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def json_error(status: int, error: str, detail: str) -> Response:
    return json_response({"error": error, "detail": detail}, status=status)


View = Callable[[Request], Awaitable[Response]]


def login_required(view: View) -> View:
    """Send anonymous visitors to the login page, remembering where they were going."""

    @functools.wraps(view)
    async def wrapper(request: Request) -> Response:
        if request.scope.get("user") is None:
            next_path = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
            return redirect(request, f"{settings.LOGIN_URL}?next={next_path}")
        return await view(request)

    return wrapper


class ApiError(Exception):
    """A JSON API refusal: status, a stable error code, and a sentence for people."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


async def read_json(request: Request) -> dict[str, Any]:
    # JSON only: a browser cannot send this content type cross-site without a CORS
    # preflight, which is why the API may skip the CSRF token that forms need.
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise ApiError(415, "unsupported_media_type", "Send the body as application/json")
    try:
        data = json.loads(await request.body() or b"null")
    except ValueError:
        raise ApiError(400, "invalid", "Body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid", "Body must be a JSON object")
    return data


MAX_IDEMPOTENCY_KEY_CHARS = 255


def idempotency_key(request: Request, *, required: bool = False) -> str | None:
    """The Idempotency-Key header: a repeat with the same key is answered, never performed, twice."""
    key = request.headers.get("idempotency-key")
    if key is None or not key.strip():
        if required:
            raise ApiError(400, "invalid", "Send an Idempotency-Key header: a retried charge must not charge twice")
        return None
    if len(key) > MAX_IDEMPOTENCY_KEY_CHARS:
        raise ApiError(400, "invalid", f"Idempotency-Key must be at most {MAX_IDEMPOTENCY_KEY_CHARS} characters")
    return key.strip()


def positive_int(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ApiError(400, "invalid", f"{key} must be a positive integer")
    return value


def optional_int_param(request: Request, name: str) -> int | None:
    """A query parameter that must be an integer when present."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not raw.isdigit():
        raise ApiError(400, "invalid", f"{name} must be an integer")
    return int(raw)

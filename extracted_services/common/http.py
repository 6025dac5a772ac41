"""The JSON conventions the services share with the monolith's API: bodies, errors, redirects.

Error codes and sentences match the monolith word for word: the contract tests
compare them, and clients may already match on them.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Match
from starlette.types import Receive, Scope, Send


class ApiError(Exception):
    """A refusal: status, a stable error code, and a sentence for people."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


def json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def json_error(status: int, error: str, detail: str) -> Response:
    return json_response({"error": error, "detail": detail}, status=status)


async def read_json(request: Request) -> dict[str, Any]:
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise ApiError(415, "unsupported_media_type", "Send the body as application/json")
    try:
        data = json.loads(await request.body() or b"null")
    except ValueError:
        raise ApiError(400, "invalid", "Body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid", "Body must be a JSON object")
    return data


def positive_int(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ApiError(400, "invalid", f"{key} must be a positive integer")
    return value


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


def optional_int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not raw.isdigit():
        raise ApiError(400, "invalid", f"{name} must be an integer")
    return int(raw)


def build_absolute_uri(request: Request, location: str) -> str:
    """Behind the proxy, the public scheme and host arrive in X-Forwarded-*."""
    proto = request.headers.get("x-forwarded-proto", request.url.scheme).split(",")[0].strip()
    host = request.headers.get("x-forwarded-host") or request.headers.get("host", "")
    return f"{proto}://{host.split(',')[0].strip()}{location}"


async def api_error_handler(request: Request, exc: ApiError) -> Response:
    return json_error(exc.status, exc.error, exc.detail)


async def append_slash_or_not_found(scope: Scope, receive: Receive, send: Send) -> None:
    """As the monolith does: 301 to the path with a slash if that exists, else a JSON 404."""
    path = scope["path"]
    if not path.endswith("/"):
        with_slash = {**scope, "path": path + "/"}
        if any(route.matches(with_slash)[0] is not Match.NONE for route in scope["router"].routes):
            request = Request(scope)
            query = f"?{request.url.query}" if request.url.query else ""
            raw_path = scope.get("raw_path", path.encode()).decode("latin-1")
            await RedirectResponse(build_absolute_uri(request, raw_path + "/" + query), 301)(scope, receive, send)
            return
    await json_error(404, "not_found", f"No API endpoint at {path}")(scope, receive, send)

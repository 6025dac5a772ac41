"""The public host and scheme of a request, which behind a proxy arrive in X-Forwarded-*."""

from __future__ import annotations

from starlette.requests import Request

from legacy_monolith import settings


def get_host(request: Request) -> str:
    """The host the client asked for; behind a proxy, the first X-Forwarded-Host."""
    forwarded = request.headers.get("x-forwarded-host") if settings.USE_X_FORWARDED_HOST else None
    if forwarded:
        return forwarded.split(",")[0].strip()
    return request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"


def get_scheme(request: Request) -> str:
    forwarded = request.headers.get("x-forwarded-proto")
    return forwarded.split(",")[0].strip().lower() if forwarded else request.url.scheme


def build_absolute_uri(request: Request, location: str) -> str:
    # Absolute, from the forwarded host: behind the proxy a redirect must point at the
    # proxy, never at the monolith's own address.
    return f"{get_scheme(request)}://{get_host(request)}{location}"

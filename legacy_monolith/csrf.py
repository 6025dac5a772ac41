"""Cross-site request forgery protection, after Django's: a secret cookie and a masked form token."""

from __future__ import annotations

import functools
import hmac
import secrets
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from legacy_monolith import forms, settings
from legacy_monolith.forwarded import get_host, get_scheme

SECRET_BYTES = 16


class CsrfFailure(Exception):
    """A state-changing request without proof that it came from our own page."""


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


def get_token(request: Request) -> str:
    """A fresh mask of the secret for each page: gzip must not leak it (the BREACH attack)."""
    state = request.scope["csrf"]
    if state.secret is None:
        state.secret, state.changed = secrets.token_hex(SECRET_BYTES), True
    salt = secrets.token_bytes(SECRET_BYTES)
    return (salt + _xor(bytes.fromhex(state.secret), salt)).hex()


def rotate_token(request: Request) -> None:
    """A new secret at login, so a token planted before login is worthless after."""
    state = request.scope["csrf"]
    state.secret, state.changed = secrets.token_hex(SECRET_BYTES), True


def _unmask(token: str) -> str | None:
    try:
        raw = bytes.fromhex(token)
    except ValueError:
        return None
    if len(raw) != 2 * SECRET_BYTES:
        return None
    return _xor(raw[SECRET_BYTES:], raw[:SECRET_BYTES]).hex()


def _check_origin(request: Request) -> None:
    origin = request.headers.get("origin")
    if origin and origin != f"{get_scheme(request)}://{get_host(request)}":
        raise CsrfFailure(f"Origin {origin} does not match the host")


def verify(request: Request, form: forms.Form) -> None:
    _check_origin(request)
    secret = request.scope["csrf"].secret
    if secret is None or request.scope["csrf"].changed:
        raise CsrfFailure("CSRF cookie not set")
    token = form.fields.get(settings.CSRF_FORM_FIELD) or request.headers.get(settings.CSRF_HEADER_NAME, "")
    unmasked = _unmask(token)
    if unmasked is None or not hmac.compare_digest(unmasked, secret):
        raise CsrfFailure("CSRF token missing or incorrect")


View = Callable[[Request], Awaitable[Response]]


def csrf_protect(view: View) -> View:
    """On POST: read the form (fields and files) into request.state.form, then check the token."""

    @functools.wraps(view)
    async def wrapper(request: Request) -> Response:
        request.state.form = forms.Form()
        if request.method == "POST":
            request.state.form = await forms.read_form(request)
            verify(request, request.state.form)
        return await view(request)

    return wrapper

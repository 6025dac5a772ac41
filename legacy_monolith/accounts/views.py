"""Login, logout and the profile page: the session cookie and CSRF token in action."""

from __future__ import annotations

import secrets

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from legacy_monolith import csrf, settings
from legacy_monolith.accounts import models
from legacy_monolith.orders import models as orders
from legacy_monolith.shortcuts import database, login_required, redirect, render


def _safe_next(target: str | None) -> str:
    # Only local paths: an open redirect would let a phishing link borrow our login page.
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return settings.LOGIN_REDIRECT_URL


@csrf.csrf_protect
async def login(request: Request) -> Response:
    next_path = _safe_next(request.query_params.get("next") or request.state.form.fields.get("next"))
    if request.method == "GET":
        return render(request, "accounts/login.html", {"next": next_path, "error": ""}, title="Log in")
    form = request.state.form.fields
    user = await run_in_threadpool(
        models.authenticate, database(request), email=form.get("email", ""), password=form.get("password", "")
    )
    if user is None:
        context = {"next": next_path, "error": "Please enter a correct email and password.", "email": form.get("email", "")}
        return render(request, "accounts/login.html", context, title="Log in", status=200)
    # A new session and a new CSRF secret at login: nothing fixed before login survives it.
    request.scope["session"] = {"user_id": user["id"], "key": secrets.token_hex(8)}
    csrf.rotate_token(request)
    await run_in_threadpool(models.record_login, database(request), user["id"])
    return redirect(request, next_path)


@csrf.csrf_protect
async def logout(request: Request) -> Response:
    if request.method == "POST":
        request.scope["session"] = {}
        return redirect(request, "/")
    return render(request, "accounts/logout.html", title="Log out")


@login_required
async def profile(request: Request) -> Response:
    user = request.scope["user"]
    recent = await run_in_threadpool(orders.list_orders, database(request), customer_email=user["email"])
    return render(request, "accounts/profile.html", {"orders": recent}, title="Your account")

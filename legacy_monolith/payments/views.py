"""Payment pages and the payments JSON API (still served by the monolith in the shipped config)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from legacy_monolith.payments import models
from legacy_monolith.shortcuts import ApiError, database, json_response, login_required, render


def _optional_int(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not raw.isdigit():
        raise ApiError(400, "invalid", f"{name} must be an integer")
    return int(raw)


@login_required
async def payment_list(request: Request) -> Response:
    payments = models.list_payments(database(request))
    return render(request, "payments/payment_list.html", {"payments": payments}, title="Payments")


def api_payment_list(request: Request) -> Response:
    payments = models.list_payments(database(request), order_id=_optional_int(request, "order_id"))
    return json_response({"count": len(payments), "payments": payments})


def api_payment_detail(request: Request) -> Response:
    try:
        return json_response(models.get_payment(database(request), request.path_params["payment_id"]))
    except models.UnknownPayment as exc:
        raise ApiError(404, "not_found", str(exc)) from None

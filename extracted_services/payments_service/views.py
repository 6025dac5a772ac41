"""The payments JSON API, the same contract as the monolith's /api/payments/."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from extracted_services.common.http import ApiError, json_response, optional_int_param
from extracted_services.payments_service import models


def payment_list(request: Request) -> Response:
    payments = models.list_payments(request.app.state.database, order_id=optional_int_param(request, "order_id"))
    return json_response({"count": len(payments), "payments": payments})


def payment_detail(request: Request) -> Response:
    try:
        return json_response(models.get_payment(request.app.state.database, request.path_params["payment_id"]))
    except models.UnknownPayment as exc:
        raise ApiError(404, "not_found", str(exc)) from None

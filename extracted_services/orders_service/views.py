"""The orders JSON API for reads, the same contract as the monolith's /api/orders/."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from extracted_services.common.http import ApiError, json_response
from extracted_services.orders_service import models


def order_list(request: Request) -> Response:
    status = request.query_params.get("status")
    if status is not None and status not in models.STATUSES:
        raise ApiError(400, "invalid", f"status must be one of {', '.join(models.STATUSES)}")
    orders = models.list_orders(request.app.state.database, status=status,
                                customer_email=request.query_params.get("customer_email"))
    return json_response({"count": len(orders), "orders": orders})


def order_detail(request: Request) -> Response:
    try:
        return json_response(models.get_order(request.app.state.database, request.path_params["order_id"]))
    except models.UnknownOrder as exc:
        raise ApiError(404, "not_found", str(exc)) from None

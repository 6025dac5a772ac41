"""Payment pages and the payments JSON API: reads, and charges and refunds for the order saga."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from legacy_monolith import settings
from legacy_monolith.payments import models
from legacy_monolith.shortcuts import (
    ApiError, database, idempotency_key, json_response, login_required, optional_int_param, positive_int, read_json,
    render,
)


@login_required
async def payment_list(request: Request) -> Response:
    payments = models.list_payments(database(request))
    return render(request, "payments/payment_list.html", {"payments": payments}, title="Payments")


def api_payment_list(request: Request) -> Response:
    payments = models.list_payments(database(request), order_id=optional_int_param(request, "order_id"))
    return json_response({"count": len(payments), "payments": payments})


def api_payment_detail(request: Request) -> Response:
    try:
        return json_response(models.get_payment(database(request), request.path_params["payment_id"]))
    except models.UnknownPayment as exc:
        raise ApiError(404, "not_found", str(exc)) from None


def _charge_request(data: dict[str, Any]) -> dict[str, Any]:
    order_id = positive_int(data, "order_id")
    amount = data.get("amount_cents")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        raise ApiError(400, "invalid", "amount_cents must be a non-negative integer")
    currency = data.get("currency", settings.CURRENCY)
    if currency != settings.CURRENCY:
        raise ApiError(400, "invalid", f"currency must be {settings.CURRENCY}")
    method = data.get("method", "card")
    if method not in models.METHODS:
        raise ApiError(400, "invalid", f"method must be one of {', '.join(models.METHODS)}")
    return {"order_id": order_id, "amount_cents": amount, "currency": currency, "method": method}


async def api_charge(request: Request) -> Response:
    """Take a payment for an order; the Idempotency-Key makes a retried charge return the first one."""
    key = idempotency_key(request, required=True)
    fields = _charge_request(await read_json(request))
    try:
        payment, replayed = await run_in_threadpool(models.charge, database(request), idempotency_key=key, **fields)
    except models.KeyReused as exc:
        raise ApiError(422, "idempotency_key_reused", str(exc)) from None
    except models.ChargeVoided as exc:
        raise ApiError(409, "charge_voided", str(exc)) from None
    request.app.state.relay.wake()
    return json_response(payment, status=201, headers={"Idempotent-Replayed": "true"} if replayed else None)


async def api_refund(request: Request) -> Response:
    data = await read_json(request)
    key = data.get("charge_key")
    if not isinstance(key, str) or not key:
        raise ApiError(400, "invalid", "charge_key must be the Idempotency-Key the charge was made with")
    payment = await run_in_threadpool(models.refund, database(request), key)
    if payment is None:
        raise ApiError(404, "not_found", f"No charge with Idempotency-Key {key}; the key can no longer charge")
    request.app.state.relay.wake()
    return json_response(payment)

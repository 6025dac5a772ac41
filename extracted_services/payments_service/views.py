"""The payments JSON API, the same contract as the monolith's /api/payments/."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from extracted_services.common.http import (
    ApiError, idempotency_key, json_error, json_response, optional_int_param, positive_int, read_json,
)
from extracted_services.payments_service import models
from extracted_services.payments_service.faults import PaymentFaults


def payment_list(request: Request) -> Response:
    payments = models.list_payments(request.app.state.database, order_id=optional_int_param(request, "order_id"))
    return json_response({"count": len(payments), "payments": payments})


def payment_detail(request: Request) -> Response:
    try:
        return json_response(models.get_payment(request.app.state.database, request.path_params["payment_id"]))
    except models.UnknownPayment as exc:
        raise ApiError(404, "not_found", str(exc)) from None


def _charge_request(data: dict[str, Any]) -> dict[str, Any]:
    order_id = positive_int(data, "order_id")
    amount = data.get("amount_cents")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        raise ApiError(400, "invalid", "amount_cents must be a non-negative integer")
    currency = data.get("currency", models.CURRENCY)
    if currency != models.CURRENCY:
        raise ApiError(400, "invalid", f"currency must be {models.CURRENCY}")
    method = data.get("method", "card")
    if method not in models.METHODS:
        raise ApiError(400, "invalid", f"method must be one of {', '.join(models.METHODS)}")
    return {"order_id": order_id, "amount_cents": amount, "currency": currency, "method": method}


async def charge(request: Request) -> Response:
    faults: PaymentFaults = request.app.state.faults
    faults.charges_received += 1
    key = idempotency_key(request, required=True)
    fields = _charge_request(await read_json(request))
    if faults.hold is not None:
        await run_in_threadpool(faults.hold.wait, faults.hold_timeout_s)
    if faults.take("fail_next"):
        return json_error(503, "unavailable", "Payments are unavailable (injected fault); nothing was charged")
    if faults.take("decline_next"):
        return json_error(402, "payment_declined", "The payment was declined (injected fault)")
    try:
        payment, replayed = await run_in_threadpool(models.charge, request.app.state.database,
                                                    idempotency_key=key, **fields)
    except models.KeyReused as exc:
        raise ApiError(422, "idempotency_key_reused", str(exc)) from None
    except models.ChargeVoided as exc:
        raise ApiError(409, "charge_voided", str(exc)) from None
    request.app.state.relay.wake()
    if faults.take("slow_next"):
        await asyncio.sleep(faults.slow_answer_s)   # charged already: the answer is what gets lost
    return json_response(payment, status=201, headers={"Idempotent-Replayed": "true"} if replayed else None)


async def refund(request: Request) -> Response:
    data = await read_json(request)
    key = data.get("charge_key")
    if not isinstance(key, str) or not key:
        raise ApiError(400, "invalid", "charge_key must be the Idempotency-Key the charge was made with")
    payment = await run_in_threadpool(models.refund, request.app.state.database, key)
    if payment is None:
        raise ApiError(404, "not_found", f"No charge with Idempotency-Key {key}; the key can no longer charge")
    request.app.state.relay.wake()
    return json_response(payment)


def configure(app: Any) -> None:
    app.state.faults = PaymentFaults()

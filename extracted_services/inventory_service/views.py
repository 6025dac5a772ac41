"""The inventory JSON API, the same contract as the monolith's /api/inventory/."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from extracted_services.common.http import ApiError, idempotency_key, json_response, positive_int, read_json
from extracted_services.inventory_service import models


def product_list(request: Request) -> Response:
    products = models.list_products(request.app.state.database)
    return json_response({"count": len(products), "items": products})


def product_detail(request: Request) -> Response:
    try:
        return json_response(models.get_product(request.app.state.database, request.path_params["sku"]))
    except models.UnknownProduct as exc:
        raise ApiError(404, "not_found", str(exc)) from None


async def reserve(request: Request) -> Response:
    data = await read_json(request)
    quantity = positive_int(data, "quantity")
    order_id = data.get("order_id")
    if order_id is not None and (isinstance(order_id, bool) or not isinstance(order_id, int)):
        raise ApiError(400, "invalid", "order_id must be an integer or null")
    key = idempotency_key(request)
    try:
        reservation, replayed = await run_in_threadpool(
            models.reserve_stock, request.app.state.database, request.path_params["sku"], quantity,
            order_id=order_id, idempotency_key=key,
        )
    except models.UnknownProduct as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except models.InsufficientStock as exc:
        raise ApiError(409, "insufficient_stock", str(exc)) from None
    except models.ReservationCancelled as exc:
        raise ApiError(409, "reservation_cancelled", str(exc)) from None
    except models.KeyReused as exc:
        raise ApiError(422, "idempotency_key_reused", str(exc)) from None
    request.app.state.relay.wake()
    return json_response(reservation, status=201, headers={"Idempotent-Replayed": "true"} if replayed else None)


async def release(request: Request) -> Response:
    data = await read_json(request)
    key = data.get("reservation_key")
    if not isinstance(key, str) or not key:
        raise ApiError(400, "invalid", "reservation_key must be the Idempotency-Key the reservation was made with")
    reservation = await run_in_threadpool(models.release_reservation, request.app.state.database, key)
    if reservation is None:
        raise ApiError(404, "not_found", f"No reservation with Idempotency-Key {key}; the key can no longer reserve")
    request.app.state.relay.wake()
    return json_response(reservation)

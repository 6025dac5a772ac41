"""Stock pages and the inventory JSON API (now served by inventory_service through the proxy)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from legacy_monolith.inventory import models
from legacy_monolith.shortcuts import (
    ApiError, database, idempotency_key, json_response, positive_int, read_json, render,
)


def _product_or_404(request: Request) -> models.Product:
    try:
        return models.get_product(database(request), request.path_params["sku"])
    except models.UnknownProduct as exc:
        raise ApiError(404, "not_found", str(exc)) from None


def product_list(request: Request) -> Response:
    products = models.list_products(database(request))
    return render(request, "inventory/product_list.html", {"products": products}, title="Inventory")


def product_detail(request: Request) -> Response:
    product = _product_or_404(request)
    return render(request, "inventory/product_detail.html", {"product": product}, title=product["name"])


def api_product_list(request: Request) -> Response:
    products = models.list_products(database(request))
    return json_response({"count": len(products), "items": products})


def api_product_detail(request: Request) -> Response:
    return json_response(_product_or_404(request))


async def api_reserve(request: Request) -> Response:
    data = await read_json(request)
    quantity = positive_int(data, "quantity")
    order_id = data.get("order_id")
    if order_id is not None and (isinstance(order_id, bool) or not isinstance(order_id, int)):
        raise ApiError(400, "invalid", "order_id must be an integer or null")
    key = idempotency_key(request)
    try:
        reservation, replayed = await run_in_threadpool(
            models.reserve_stock, database(request), request.path_params["sku"], quantity, order_id=order_id,
            idempotency_key=key,
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


async def api_release(request: Request) -> Response:
    data = await read_json(request)
    key = data.get("reservation_key")
    if not isinstance(key, str) or not key:
        raise ApiError(400, "invalid", "reservation_key must be the Idempotency-Key the reservation was made with")
    reservation = await run_in_threadpool(models.release_reservation, database(request), key)
    if reservation is None:
        raise ApiError(404, "not_found", f"No reservation with Idempotency-Key {key}; the key can no longer reserve")
    request.app.state.relay.wake()
    return json_response(reservation)

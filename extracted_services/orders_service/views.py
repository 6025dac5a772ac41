"""The orders JSON API, the same contract as the monolith's /api/orders/; placing an order runs the saga."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from domain_events import internal
from extracted_services.common import faults
from extracted_services.common.http import (
    ApiError, build_absolute_uri, idempotency_key, json_error, json_response, positive_int, read_json,
)
from extracted_services.orders_service import models, sagas
from extracted_services.orders_service.saga import SagaRunner, Unavailable, call_service

PAYMENT_METHODS = ("card", "invoice")
# A planted difference, for the README's walk-through of shadow traffic: with this set to 1 the order
# detail rounds each line total to whole currency units, as a port that went through a float in
# euros would. The monolith never does; the proxy's shadow report finds it at $.lines[*].line_total_cents.
ROUND_LINE_TOTALS_ENV = "ORDERS_SERVICE_ROUND_LINE_TOTALS"
# How a saga that was undone answers the POST that placed it, by failure kind.
FAILURE_ANSWERS = {
    "insufficient_stock": (409, "insufficient_stock"),
    "unknown_product": (400, "invalid"),
    "payment_declined": (402, "payment_failed"),
    "payment_rejected": (402, "payment_failed"),
    "charge_voided": (402, "payment_failed"),
    "unavailable": (503, "unavailable"),
}


def order_list(request: Request) -> Response:
    status = request.query_params.get("status")
    if status is not None and status not in models.STATUSES:
        raise ApiError(400, "invalid", f"status must be one of {', '.join(models.STATUSES)}")
    orders = models.list_orders(request.app.state.database, status=status,
                                customer_email=request.query_params.get("customer_email"))
    return json_response({"count": len(orders), "orders": orders})


def order_detail(request: Request) -> Response:
    try:
        order = models.get_order(request.app.state.database, request.path_params["order_id"])
    except models.UnknownOrder as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    if request.app.state.round_line_totals:
        for line in order["lines"]:
            line["line_total_cents"] = round(line["quantity"] * line["unit_price_cents"] / 100) * 100
    return json_response(order)


def _order_lines(data: dict[str, Any]) -> list[tuple[str, int]]:
    """As the monolith reads them: a list of {sku, quantity}, quantities of one SKU added up."""
    lines = data.get("lines")
    if not isinstance(lines, list) or not all(isinstance(line, dict) for line in lines):
        raise ApiError(400, "invalid", "lines must be a list of {sku, quantity} objects")
    if not all(isinstance(line.get("sku"), str) for line in lines):
        raise ApiError(400, "invalid", "every line needs a sku")
    quantities: dict[str, int] = {}
    for line in lines:
        quantities[line["sku"]] = quantities.get(line["sku"], 0) + positive_int(line, "quantity")
    return list(quantities.items())


async def _priced(runner: SagaRunner, lines: list[tuple[str, int]]) -> list[dict[str, Any]]:
    """Each line with the product's name and price, from inventory_service (the catalogue lives there)."""
    priced = []
    for sku, quantity in lines:
        try:
            status, product = await call_service(runner.inventory, "GET", f"/api/inventory/{quote(sku, safe='')}/")
        except Unavailable as exc:
            raise ApiError(503, "unavailable", f"Cannot price the order now: {exc}") from None
        if status == 404:
            raise ApiError(400, "invalid", f"No product with SKU {sku}")
        if status != 200 or not isinstance(product, dict):
            raise ApiError(503, "unavailable", f"Cannot price the order now: inventory answered HTTP {status}")
        priced.append({"sku": sku, "quantity": quantity, "product_name": product["name"],
                       "unit_price_cents": product["price_cents"]})
    return priced


async def order_create(request: Request) -> Response:
    """Place an order: 201 once paid (or awaiting an invoice), 202 while its saga still runs, else why not."""
    data = await read_json(request)
    lines = _order_lines(data)
    email = str(data.get("customer_email", ""))
    if "@" not in email:
        raise ApiError(400, "invalid", "customer_email must be an email address")
    if not lines:
        raise ApiError(400, "invalid", "an order needs at least one line")
    method = str(data.get("payment_method", "card"))
    if method not in PAYMENT_METHODS:
        raise ApiError(400, "invalid", f"payment_method must be one of {', '.join(PAYMENT_METHODS)}")
    runner: SagaRunner = request.app.state.sagas
    key = idempotency_key(request)
    priced = await _priced(runner, lines)
    order_id, created = await run_in_threadpool(sagas.create, request.app.state.database, customer_email=email,
                                                lines=priced, payment_method=method, request_key=key)
    if created:
        request.app.state.metrics.saga_started.inc()
        request.app.state.relay.wake()
    task = runner.run(order_id)
    try:
        saga = await asyncio.wait_for(asyncio.shield(task), request.app.state.wiring.place_wait_s)
    except TimeoutError:
        saga = None
    location = build_absolute_uri(request, f"/api/orders/{order_id}/")
    order = await run_in_threadpool(models.get_order, request.app.state.database, order_id)
    if saga is None or saga.state == sagas.DEAD:
        return json_response(order, status=202, headers={"Location": location})
    if saga.state == sagas.COMPLETED:
        return json_response(order, status=201, headers={"Location": location})
    status, error = FAILURE_ANSWERS.get(saga.failure_kind or "", (409, "order_failed"))
    return json_error(status, error, f"Order {order_id} was cancelled: {saga.failure}")


async def saga_list(request: Request) -> Response:
    """Internal: the sagas, optionally ?state=dead, for operators."""
    if (refused := internal.refusal(request)) is not None:
        return refused
    found = await run_in_threadpool(sagas.describe, request.app.state.database,
                                    state=request.query_params.get("state"))
    return json_response({"count": len(found), "sagas": found})


async def saga_retry(request: Request) -> Response:
    """Internal: run a dead saga's compensation again, once what it waited for is back."""
    if (refused := internal.refusal(request)) is not None:
        return refused
    order_id = request.path_params["order_id"]
    if not await run_in_threadpool(sagas.retry_dead, request.app.state.database, order_id):
        return json_error(404, "not_found", f"No dead saga for order {order_id}")
    request.app.state.sagas.run(order_id)
    return json_response({"order_id": order_id, "state": sagas.COMPENSATING}, status=202)


def configure(app: Any) -> None:
    faults.install(app)       # POST /faults/ plants a share of 500s, for the ramp walk-through in the README
    app.state.round_line_totals = os.environ.get(ROUND_LINE_TOTALS_ENV) == "1"
    runner = SagaRunner(app.state.database, app.state.wiring, app.state.metrics)
    runner.on_transition = lambda saga: app.state.relay.wake()   # its events go out without waiting a tick
    app.state.sagas = runner


@asynccontextmanager
async def lifecycle(app: Any) -> AsyncIterator[None]:
    """While serving: resume the sagas a previous process left unfinished; stop them cleanly at the end."""
    await app.state.sagas.recover()
    try:
        yield
    finally:
        await app.state.sagas.close()

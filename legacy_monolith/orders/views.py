"""Order pages, the CSV export and the orders JSON API (reads partly moved to orders_service)."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Iterator
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.websockets import WebSocket

from legacy_monolith import csrf
from legacy_monolith.db import Database
from legacy_monolith.forwarded import build_absolute_uri
from legacy_monolith.inventory import models as inventory
from legacy_monolith.orders import models
from legacy_monolith.shortcuts import (
    ApiError, database, json_response, login_required, positive_int, read_json, redirect, render,
)

EXPORT_BATCH_ROWS = 20
# How often a live order page's socket looks for a new status (the demo's scale: a few watchers).
LIVE_STATUS_POLL_S = 1.0
EXPORT_COLUMNS = ("order_id", "created_at", "customer_email", "status", "sku", "quantity", "unit_price_cents")


def _order_or_404(request: Request) -> models.Order:
    try:
        return models.get_order(database(request), request.path_params["order_id"])
    except models.UnknownOrder as exc:
        raise ApiError(404, "not_found", str(exc)) from None


@login_required
async def order_list(request: Request) -> Response:
    user = request.scope["user"]
    email = None if user["is_staff"] else user["email"]  # staff see every order
    orders = await run_in_threadpool(models.list_orders, database(request), customer_email=email)
    return render(request, "orders/order_list.html", {"orders": orders}, title="Orders")


@login_required
async def order_detail(request: Request) -> Response:
    order = await run_in_threadpool(_order_or_404, request)
    user = request.scope["user"]
    if not user["is_staff"] and order["customer_email"] != user["email"]:
        # 404, not 403: a customer must not learn which order numbers exist.
        raise ApiError(404, "not_found", f"No order with id {order['id']}")
    return render(request, "orders/order_detail.html", {"order": order}, title=f"Order {order['id']}")


@login_required
@csrf.csrf_protect
async def order_create(request: Request) -> Response:
    products = await run_in_threadpool(inventory.list_products, database(request))
    context: dict[str, Any] = {"products": products, "error": ""}
    if request.method == "POST":
        form = request.state.form.fields
        lines = [(p["sku"], int(form[f"qty_{p['sku']}"])) for p in products
                 if form.get(f"qty_{p['sku']}", "").isdigit() and int(form[f"qty_{p['sku']}"]) > 0]
        try:
            order = await run_in_threadpool(
                models.place_order, database(request), customer_email=request.scope["user"]["email"],
                lines=lines, payment_method=form.get("payment_method", "card"),
            )
        except (models.InvalidOrder, inventory.InsufficientStock) as exc:
            context["error"] = str(exc)
        else:
            return redirect(request, f"/orders/{order['id']}/")
    return render(request, "orders/order_form.html", context, title="New order")


def _export_rows(db: Database) -> Iterator[str]:
    """The CSV in batches, so the first rows leave before the last are read."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    with db.reading() as conn:
        cursor = conn.execute(
            "SELECT o.id, o.created_at, o.customer_email, o.status, l.sku, l.quantity, l.unit_price_cents"
            " FROM orders_order o JOIN orders_orderline l ON l.order_id = o.id ORDER BY o.id, l.id"
        )
        while batch := cursor.fetchmany(EXPORT_BATCH_ROWS):
            writer.writerows(tuple(row) for row in batch)
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    if buffer.getvalue():
        yield buffer.getvalue()


@login_required
async def order_export(request: Request) -> Response:
    """Every order line, for the back office: staff only."""
    if not request.scope["user"]["is_staff"]:
        raise ApiError(403, "forbidden", "The order export is for staff only")
    headers = {"Content-Disposition": 'attachment; filename="orders.csv"'}
    return StreamingResponse(_export_rows(database(request)), media_type="text/csv", headers=headers)


def api_order_list(request: Request) -> Response:
    status = request.query_params.get("status")
    if status is not None and status not in models.STATUSES:
        raise ApiError(400, "invalid", f"status must be one of {', '.join(models.STATUSES)}")
    orders = models.list_orders(database(request), status=status,
                                customer_email=request.query_params.get("customer_email"))
    return json_response({"count": len(orders), "orders": orders})


def api_order_detail(request: Request) -> Response:
    return json_response(_order_or_404(request))


def _order_lines(data: dict[str, Any]) -> list[tuple[str, int]]:
    lines = data.get("lines")
    if not isinstance(lines, list) or not all(isinstance(line, dict) for line in lines):
        raise ApiError(400, "invalid", "lines must be a list of {sku, quantity} objects")
    if not all(isinstance(line.get("sku"), str) for line in lines):
        raise ApiError(400, "invalid", "every line needs a sku")
    return [(line["sku"], positive_int(line, "quantity")) for line in lines]


async def api_order_create(request: Request) -> Response:
    data = await read_json(request)
    try:
        order = await run_in_threadpool(
            models.place_order, database(request), customer_email=str(data.get("customer_email", "")),
            lines=_order_lines(data), payment_method=str(data.get("payment_method", "card")),
        )
    except models.InvalidOrder as exc:
        raise ApiError(400, "invalid", str(exc)) from None
    except inventory.InsufficientStock as exc:
        raise ApiError(409, "insufficient_stock", str(exc)) from None
    request.app.state.relay.wake()      # its events go to the services now, not at the next tick
    location = build_absolute_uri(request, f"/api/orders/{order['id']}/")
    return json_response(order, status=201, headers={"Location": location})


async def order_status_live(websocket: WebSocket) -> None:
    """Order status notifications over a WebSocket: the status now, then each change, as JSON.

    For the order's customer and staff, as the order page; anyone else is refused at the
    handshake (403). The order page opens it to show its status live.
    """
    user = websocket.scope.get("user")
    order_id = websocket.path_params["order_id"]
    db = database(websocket)  # type: ignore[arg-type]  # a WebSocket has the app too
    try:
        order = await run_in_threadpool(models.get_order, db, order_id)
    except models.UnknownOrder:
        order = None
    if user is None or order is None or (not user["is_staff"] and order["customer_email"] != user["email"]):
        await websocket.close(code=1008)        # before accepting: the handshake is answered 403
        return
    await websocket.accept()
    incoming = asyncio.ensure_future(websocket.receive())    # the client says nothing; only its close matters
    sent = None
    try:
        while True:
            if order["status"] != sent:
                sent = order["status"]
                await websocket.send_json({"order_id": order_id, "status": sent})
            done, _ = await asyncio.wait({incoming}, timeout=LIVE_STATUS_POLL_S)
            if done:
                if incoming.result()["type"] == "websocket.disconnect":
                    return
                incoming = asyncio.ensure_future(websocket.receive())
            order = await run_in_threadpool(models.get_order, db, order_id)
    finally:
        incoming.cancel()

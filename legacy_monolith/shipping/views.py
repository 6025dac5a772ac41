"""Shipment tracking pages, and a JSON list of an order's shipments (shipping has not been extracted yet)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from legacy_monolith.shipping import models
from legacy_monolith.shortcuts import ApiError, database, json_response, optional_int_param, render


def shipment_list(request: Request) -> Response:
    shipments = models.list_shipments(database(request))
    return render(request, "shipping/shipment_list.html", {"shipments": shipments}, title="Shipments")


def shipment_detail(request: Request) -> Response:
    try:
        shipment = models.get_shipment(database(request), request.path_params["shipment_id"])
    except models.UnknownShipment as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    return render(request, "shipping/shipment_detail.html", {"shipment": shipment}, title=f"Shipment {shipment['id']}")


def api_shipment_list(request: Request) -> Response:
    shipments = models.list_shipments(database(request), order_id=optional_int_param(request, "order_id"))
    return json_response({"count": len(shipments), "shipments": shipments})

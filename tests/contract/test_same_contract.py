"""One suite, two sides: each extracted service answers its routes as the monolith does.

A case that passes here on both sides is one the proxy may shift traffic on. Each case
is a few steps (a write and the read that shows its effect); both sides start from the
same seeded data and must agree on status, the headers a client acts on, and the body.

Ids of rows a step creates are the one thing allowed to differ: while a context is
split both sides create rows, the monolith below 1,000,000,000 and the service above,
so that copies exchanged as events keep their ids (steps marked `allocated`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

# Shapes: a dict needs exactly these keys; [shape] is a list of such items; a tuple allows several types.
NULLABLE_INT = (int, type(None))
ERROR = {"error": str, "detail": str}
PRODUCT = {"sku": str, "name": str, "price_cents": int, "on_hand": int, "reserved": int, "available": int}
RESERVATION = {"id": int, "sku": str, "quantity": int, "order_id": NULLABLE_INT, "available": int, "status": str}
ORDER_SUMMARY = {"id": int, "customer_email": str, "status": str, "currency": str, "total_cents": int,
                 "created_at": str}
LINE = {"sku": str, "product_name": str, "quantity": int, "unit_price_cents": int, "line_total_cents": int}
ORDER = {**ORDER_SUMMARY, "lines": [LINE], "payment_id": NULLABLE_INT}
PAYMENT = {"id": int, "order_id": int, "amount_cents": int, "currency": str, "method": str, "status": str,
           "created_at": str}
COMPARED_HEADERS = ("content-type", "content-encoding", "location", "allow")


@dataclass(frozen=True)
class Step:
    method: str
    path: str
    status: int
    shape: Any = None                      # None: not JSON (a redirect, a 405)
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    expect: dict[str, Any] = field(default_factory=dict)   # a few values worth stating outright
    location: str | None = None            # for redirects
    allocated: bool = False                # the body holds ids this side allocated: compared as present, not by value


@dataclass(frozen=True)
class Case:
    service: str
    name: str
    steps: tuple[Step, ...]

    @property
    def id(self) -> str:
        return f"{self.service}:{self.name}"


def get(path: str, status: int = 200, shape: Any = None, **kw: Any) -> Step:
    return Step("GET", path, status, shape, **kw)


def post(path: str, status: int, shape: Any = ERROR, **kw: Any) -> Step:
    return Step("POST", path, status, shape, **kw)


RESERVE = "/api/inventory/ESP-001/reserve/"
RELEASE = "/api/inventory/reservations/release/"
CHARGE = "/api/payments/"
REFUND = "/api/payments/refund/"
KEY = {"Idempotency-Key": "contract-key-1"}
A_CHARGE = {"order_id": 3, "amount_cents": 1250, "method": "card"}
CASES = [
    Case("inventory", "list", (get("/api/inventory/", shape={"count": int, "items": [PRODUCT]}, expect={"count": 8}),)),
    Case("inventory", "detail", (get("/api/inventory/ESP-001/", shape=PRODUCT, expect={"on_hand": 40}),)),
    Case("inventory", "detail-unknown-sku", (get("/api/inventory/NOPE-1/", 404, ERROR),)),
    Case("inventory", "missing-slash-redirects",
         (get("/api/inventory/ESP-001", 301, location="http://shop.test/api/inventory/ESP-001/"),)),
    Case("inventory", "redirect-uses-forwarded-host",
         (get("/api/inventory", 301, headers={"X-Forwarded-Host": "shop.example.com", "X-Forwarded-Proto": "https"},
              location="https://shop.example.com/api/inventory/"),)),
    Case("inventory", "reserve-then-read", (
        post(RESERVE, 201, RESERVATION, json={"quantity": 2}, expect={"quantity": 2, "order_id": None}, allocated=True),
        get("/api/inventory/ESP-001/", shape=PRODUCT),
        post(RESERVE, 201, RESERVATION, json={"quantity": 1, "order_id": 77}, expect={"order_id": 77}, allocated=True),
    )),
    Case("inventory", "reserve-twice-with-one-key", (
        post(RESERVE, 201, RESERVATION, json={"quantity": 2}, headers=KEY, expect={"status": "held"}, allocated=True),
        post(RESERVE, 201, RESERVATION, json={"quantity": 2}, headers=KEY, expect={"available": 25}, allocated=True),
        get("/api/inventory/ESP-001/", shape=PRODUCT, expect={"available": 25}),
    )),
    Case("inventory", "reserve-key-reused-for-something-else", (
        post(RESERVE, 201, RESERVATION, json={"quantity": 1}, headers=KEY, allocated=True),
        post(RESERVE, 422, json={"quantity": 3}, headers=KEY),
    )),
    Case("inventory", "release-by-key-gives-stock-back-once", (
        post(RESERVE, 201, RESERVATION, json={"quantity": 4, "order_id": 9}, headers=KEY, allocated=True),
        post(RELEASE, 200, RESERVATION, json={"reservation_key": "contract-key-1"}, expect={"status": "released"},
             allocated=True),
        post(RELEASE, 200, RESERVATION, json={"reservation_key": "contract-key-1"}, expect={"available": 27},
             allocated=True),
        get("/api/inventory/ESP-001/", shape=PRODUCT, expect={"available": 27}),
        post(RESERVE, 201, RESERVATION, json={"quantity": 4, "order_id": 9}, headers=KEY,
             expect={"status": "released"}, allocated=True),
    )),
    Case("inventory", "release-before-reserve-voids-the-key", (
        post(RELEASE, 404, json={"reservation_key": "contract-key-1"}),
        post(RESERVE, 409, json={"quantity": 1}, headers=KEY, expect={"error": "reservation_cancelled"}),
        get("/api/inventory/ESP-001/", shape=PRODUCT, expect={"available": 27}),
    )),
    Case("inventory", "release-without-a-key", (post(RELEASE, 400, json={}),)),
    Case("inventory", "reserve-more-than-available", (post(RESERVE, 409, json={"quantity": 100_000}),
                                                      get("/api/inventory/ESP-001/", shape=PRODUCT))),
    Case("inventory", "reserve-unknown-sku", (post("/api/inventory/NOPE-1/reserve/", 404, json={"quantity": 1}),)),
    Case("inventory", "reserve-zero", (post(RESERVE, 400, json={"quantity": 0}),)),
    Case("inventory", "reserve-quantity-as-string", (post(RESERVE, 400, json={"quantity": "2"}),)),
    Case("inventory", "reserve-bad-order-id", (post(RESERVE, 400, json={"quantity": 1, "order_id": "x"}),)),
    Case("inventory", "reserve-not-json", (post(RESERVE, 415, content=b"quantity=1",
                                                headers={"Content-Type": "application/x-www-form-urlencoded"}),)),
    Case("inventory", "reserve-broken-json", (post(RESERVE, 400, content=b"{",
                                                   headers={"Content-Type": "application/json"}),)),
    Case("inventory", "reserve-json-array", (post(RESERVE, 400, json=[1]),)),
    Case("inventory", "reserve-by-get", (get(RESERVE, 405),)),
    Case("orders", "list", (get("/api/orders/", shape={"count": int, "orders": [ORDER_SUMMARY]}, expect={"count": 24}),)),
    Case("orders", "list-by-status", (get("/api/orders/?status=awaiting_payment",
                                          shape={"count": int, "orders": [ORDER_SUMMARY]}),)),
    Case("orders", "list-by-unknown-status", (get("/api/orders/?status=lost", 400, ERROR),)),
    Case("orders", "list-pending", (get("/api/orders/?status=pending", shape={"count": int, "orders": [ORDER_SUMMARY]},
                                        expect={"count": 0}),)),
    Case("orders", "list-by-customer", (get("/api/orders/?customer_email=ALICE@example.com",
                                            shape={"count": int, "orders": [ORDER_SUMMARY]}),)),
    Case("orders", "detail", (get("/api/orders/1/", shape=ORDER, expect={"id": 1}),)),
    Case("orders", "detail-invoice-order", (get("/api/orders/5/", shape=ORDER, expect={"status": "awaiting_payment"}),)),
    Case("orders", "detail-unknown", (get("/api/orders/999/", 404, ERROR),)),
    Case("orders", "detail-id-beyond-64-bits", (get("/api/orders/99999999999999999999999/", 404, ERROR),)),
    Case("orders", "detail-not-a-number", (get("/api/orders/seven/", 404, ERROR),)),
    Case("orders", "missing-slash-keeps-query",
         (get("/api/orders?status=paid", 301, location="http://shop.test/api/orders/?status=paid"),)),
    Case("payments", "list", (get("/api/payments/", shape={"count": int, "payments": [PAYMENT]}, expect={"count": 24}),)),
    Case("payments", "list-by-order", (get("/api/payments/?order_id=3", shape={"count": int, "payments": [PAYMENT]},
                                           expect={"count": 1}),)),
    Case("payments", "list-by-bad-order", (get("/api/payments/?order_id=x", 400, ERROR),)),
    Case("payments", "detail", (get("/api/payments/3/", shape=PAYMENT, expect={"order_id": 3}),)),
    Case("payments", "detail-unknown", (get("/api/payments/999/", 404, ERROR),)),
    Case("payments", "charge-twice-with-one-key", (
        post(CHARGE, 201, PAYMENT, json=A_CHARGE, headers=KEY, expect={"status": "captured", "amount_cents": 1250},
             allocated=True),
        post(CHARGE, 201, PAYMENT, json=A_CHARGE, headers=KEY, allocated=True),
        get("/api/payments/?order_id=3", shape={"count": int, "payments": [PAYMENT]}, expect={"count": 2},
            allocated=True),
    )),
    Case("payments", "charge-by-invoice-is-pending", (
        post(CHARGE, 201, PAYMENT, json={**A_CHARGE, "method": "invoice"}, headers=KEY, expect={"status": "pending"},
             allocated=True),
    )),
    Case("payments", "charge-without-a-key", (post(CHARGE, 400, json=A_CHARGE),)),
    Case("payments", "charge-with-an-unknown-method", (post(CHARGE, 400, json={**A_CHARGE, "method": "iou"},
                                                            headers=KEY),)),
    Case("payments", "charge-with-a-negative-amount", (post(CHARGE, 400, json={**A_CHARGE, "amount_cents": -1},
                                                            headers=KEY),)),
    Case("payments", "charge-key-reused-for-something-else", (
        post(CHARGE, 201, PAYMENT, json=A_CHARGE, headers=KEY, allocated=True),
        post(CHARGE, 422, json={**A_CHARGE, "amount_cents": 1}, headers=KEY),
    )),
    Case("payments", "refund-by-key", (
        post(CHARGE, 201, PAYMENT, json=A_CHARGE, headers=KEY, allocated=True),
        post(REFUND, 200, PAYMENT, json={"charge_key": "contract-key-1"}, expect={"status": "refunded"},
             allocated=True),
        post(REFUND, 200, PAYMENT, json={"charge_key": "contract-key-1"}, expect={"status": "refunded"},
             allocated=True),
        post(CHARGE, 201, PAYMENT, json=A_CHARGE, headers=KEY, expect={"status": "refunded"}, allocated=True),
    )),
    Case("payments", "refund-before-charge-voids-the-key", (
        post(REFUND, 404, json={"charge_key": "contract-key-1"}),
        post(CHARGE, 409, json=A_CHARGE, headers=KEY, expect={"error": "charge_voided"}),
        get("/api/payments/?order_id=3", shape={"count": int, "payments": [PAYMENT]}, expect={"count": 1}),
    )),
    Case("payments", "list-by-get-only", (Step("PUT", CHARGE, 405),)),
]


def shape_problems(value: Any, shape: Any, path: str = "$") -> list[str]:
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return [f"{path}: expected an object, found {type(value).__name__}"]
        if set(value) != set(shape):
            return [f"{path}: keys {sorted(value)} != {sorted(shape)}"]
        return [p for key, sub in shape.items() for p in shape_problems(value[key], sub, f"{path}.{key}")]
    if isinstance(shape, list):
        if not isinstance(value, list):
            return [f"{path}: expected a list, found {type(value).__name__}"]
        return [p for i, item in enumerate(value) for p in shape_problems(item, shape[0], f"{path}[{i}]")]
    types = shape if isinstance(shape, tuple) else (shape,)
    if isinstance(value, bool) or not isinstance(value, types):
        return [f"{path}: expected {shape}, found {value!r}"]
    return []


async def run_steps(client: httpx.AsyncClient, case: Case) -> list[httpx.Response]:
    async with client:
        return [await client.request(step.method, step.path, json=step.json, content=step.content,
                                     headers=step.headers) for step in case.steps]


def without_ids(value: Any) -> Any:
    """The value with every "id" replaced by a placeholder: for rows each side numbers its own way."""
    if isinstance(value, dict):
        return {key: "<allocated id>" if key == "id" else without_ids(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_ids(item) for item in value]
    return value


def observed(response: httpx.Response, step: Step) -> dict[str, Any]:
    """What a client acts on: status, a few headers, and the body (parsed when JSON)."""
    is_json = response.headers.get("content-type", "").startswith("application/json")
    body = json.loads(response.content) if is_json else response.text
    return {"status": response.status_code,
            "headers": {name: response.headers.get(name) for name in COMPARED_HEADERS},
            "body": without_ids(body) if step.allocated else body}


@pytest.mark.parametrize("side", ["legacy", "service"])
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
async def test_answers_with_the_documented_status_and_shape(case: Case, side: str, client_for) -> None:
    """Each side on its own gives the status, JSON shape and key values the contract documents."""
    responses = await run_steps(client_for("legacy" if side == "legacy" else case.service), case)
    for step, response in zip(case.steps, responses):
        assert response.status_code == step.status, f"{step.method} {step.path}: {response.text}"
        if step.shape is not None:
            assert shape_problems(response.json(), step.shape) == []
            assert {key: response.json().get(key) for key in step.expect} == step.expect
        assert response.headers.get("location") == step.location


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
async def test_service_answers_exactly_as_the_monolith_does(case: Case, client_for) -> None:
    """Same seeded data, same requests: same status, headers and body, value for value."""
    legacy = await run_steps(client_for("legacy"), case)
    service = await run_steps(client_for(case.service), case)
    for step, old, new in zip(case.steps, legacy, service):
        assert observed(new, step) == observed(old, step), f"{step.method} {step.path}"


@pytest.mark.parametrize("side", ["legacy", "service"])
@pytest.mark.parametrize(("service", "path", "body"), [("inventory", RESERVE, {"quantity": 1}),
                                                       ("payments", CHARGE, A_CHARGE)])
async def test_a_repeated_key_is_answered_with_the_first_result(side: str, service: str, path: str,
                                                                body: dict[str, Any], client_for) -> None:
    """The repeat says it is one (Idempotent-Replayed) and names the row the first request made."""
    async with client_for("legacy" if side == "legacy" else service) as client:
        first = await client.post(path, json=body, headers=KEY)
        again = await client.post(path, json=body, headers=KEY)
    assert first.status_code == again.status_code == 201
    assert "idempotent-replayed" not in first.headers and again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    if side == "service":
        assert first.json()["id"] > 1_000_000_000      # the service's own id range

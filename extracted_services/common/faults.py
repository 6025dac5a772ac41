"""A planted fault for drills: a share of API requests answered 500, switched at runtime by an operator.

    GET  /faults/                           {"error_percent": 0.0}
    POST /faults/  {"error_percent": 5}     from now on about 5% of /api/ requests get 500; 0 turns it off

Internal like /outbox/: never through the proxy, and the events token when one is set.
Health checks and internal endpoints are never faulted: the service looks up, and fails part of its work.
"""

from __future__ import annotations

import json
import random
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from domain_events import internal

_BODY = json.dumps({"error": "planted_fault", "detail": "a fault planted through POST /faults/"}).encode()


class Faults:
    """ASGI middleware: answers 500 to the app's `fault_error_percent` of the requests under /api/."""

    def __init__(self, app: Any, rng: random.Random | None = None) -> None:
        self.app = app
        self.rng = rng or random.Random()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        percent = scope["app"].state.fault_error_percent if scope["type"] == "http" else 0.0
        if percent > 0 and scope["path"].startswith("/api/") and self.rng.random() * 100 < percent:
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(_BODY))]})
            await send({"type": "http.response.body", "body": _BODY})
            return
        await self.app(scope, receive, send)


async def faults(request: Request) -> Response:
    if (refused := internal.refusal(request)) is not None:
        return refused
    if request.method == "POST":
        try:
            percent = float(json.loads(await request.body())["error_percent"])
        except (ValueError, KeyError, TypeError):
            return internal.json_error(400, "invalid", 'send {"error_percent": N} with N from 0 to 100')
        if not 0 <= percent <= 100:
            return internal.json_error(400, "invalid", "error_percent must be from 0 to 100")
        request.app.state.fault_error_percent = percent
    return internal.json_response({"error_percent": request.app.state.fault_error_percent})


def install(app: Any) -> None:
    """Put the fault switch in front of the app's routes and add /faults/; off until an operator sets it."""
    app.state.fault_error_percent = 0.0
    app.add_middleware(Faults)
    app.router.routes.append(Route("/faults/", faults, methods=["GET", "POST"], name="faults"))

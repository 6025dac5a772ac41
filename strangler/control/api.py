"""The controller's admin endpoints: GET /ramps, POST /ramps/{route}/ACTION, roll back all and its lift.

Bad input is a 4xx problem+json that says what is wrong, never a 500. Who may
POST at all (the admin token, the Origin check) is the admin listener's guard's
business, in front of every admin endpoint alike.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..problem import problem_document
from .controller import ControlError, Controller

log = logging.getLogger("strangler.control")

ACTIONS = ("pause", "resume", "promote", "rollback")
MAX_BODY_BYTES = 64 * 1024
MAX_REASON_CHARS = 1000
Handler = Callable[[Request], Awaitable[Response]]


def problem(status: int, title: str, detail: str, **extra: Any) -> Response:
    return Response(problem_document(status, title, detail, **extra), status_code=status,
                    media_type="application/problem+json")


def _answers_problems(handler: Handler) -> Handler:
    async def handle(request: Request) -> Response:
        try:
            return await handler(request)
        except ControlError as error:
            return problem(error.status, error.title, error.detail)
        except Exception:
            log.exception("admin.error path=%s", request.url.path)
            return problem(500, "Controller error", "the controller failed; the shares in force are unchanged "
                           "unless the log says otherwise")
    return handle


async def _json_body(request: Request) -> dict[str, Any]:
    data = b""
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY_BYTES:
            raise ControlError(413, "Body too large", f"the body must be under {MAX_BODY_BYTES} bytes")
    if not data.strip():
        return {}
    try:
        found = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise ControlError(400, "Malformed JSON", f"the body is not JSON: {error}") from None
    if not isinstance(found, dict):
        raise ControlError(400, "Malformed JSON", 'expected a JSON object such as {"reason": "..."}')
    return found


def _reason(body: dict[str, Any], *, required: bool) -> str:
    reason = body.get("reason", "")
    if not isinstance(reason, str):
        raise ControlError(400, "Bad reason", "reason must be a string")
    reason = " ".join(reason.split())[:MAX_REASON_CHARS]
    if required and not reason:
        raise ControlError(400, "Reason required", 'say why in the body: {"reason": "..."}')
    return reason


def _who(request: Request) -> str:
    client = request.client.host if request.client else "?"
    agent = request.headers.get("user-agent", "")[:60]
    return f"{client} ({agent})" if agent else client


def control_routes(controller: Controller) -> list[Route]:
    async def ramps(request: Request) -> Response:
        return JSONResponse(controller.document())

    async def ramp_action(request: Request) -> Response:
        action = request.path_params["action"]
        if action not in ACTIONS:
            return problem(404, "No such action", f"expected one of {', '.join(ACTIONS)}, found {action!r}")
        reason = _reason(await _json_body(request), required=False)
        return JSONResponse(controller.act(request.path_params["route"], action, reason, _who(request)))

    async def rollback_all(request: Request) -> Response:
        reason = _reason(await _json_body(request), required=True)
        return JSONResponse(controller.rollback_all(reason, _who(request)))

    async def rollback_state(request: Request) -> Response:
        return JSONResponse(controller.rollback_document())

    async def lift(request: Request) -> Response:
        reason = _reason(await _json_body(request), required=False)
        return JSONResponse(controller.lift(reason, _who(request)))

    return [
        Route("/ramps", _answers_problems(ramps), methods=["GET"]),
        Route("/ramps/{route}/{action}", _answers_problems(ramp_action), methods=["POST"]),
        Route("/rollback-all", _answers_problems(rollback_all), methods=["POST"]),
        Route("/rollback-all", _answers_problems(rollback_state), methods=["GET"]),
        Route("/rollback-all/lift", _answers_problems(lift), methods=["POST"]),
    ]


def controller_elsewhere_routes(controller_url: str) -> list[Route]:
    """On an instance that follows a controller, ramps and roll back all are the controller's: say where it is."""
    async def elsewhere(request: Request) -> Response:
        return problem(409, "Ramps are run by the controller",
                       f"this instance takes its shares from the controller at {controller_url}; ask it there "
                       f"(strangler rollback-all --admin {controller_url} ...)", controller=controller_url)

    return [
        Route("/ramps", elsewhere, methods=["GET"]),
        Route("/ramps/{route}/{action}", elsewhere, methods=["POST"]),
        Route("/rollback-all", elsewhere, methods=["GET", "POST"]),
        Route("/rollback-all/lift", elsewhere, methods=["POST"]),
    ]

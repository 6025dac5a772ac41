"""Endpoints for the other sides and for operators, never for the public, on the monolith and every service.

    POST /events/                                 a subscriber receives an event (inbox.apply_event)
    GET  /outbox/                                 relay state, delivery counts per subscriber, dead letters
    GET  /outbox/dead-letters/                    events and sagas given up on, with the reason
    POST /outbox/dead-letters/{id}/replay/        put a dead event back in the queue
    POST /outbox/relay/stop/, /outbox/relay/start/
    GET  /metrics                                 Prometheus text

A request that came through the proxy (it carries X-Forwarded-For) is answered 404,
and when STRANGLER_EVENTS_TOKEN is set every request must bring it as a bearer token.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from domain_events import outbox
from domain_events.inbox import Event, EventRejected, Handler, apply_event
from domain_events.metrics import EventMetrics
from domain_events.relay import OutboxRelay
from domain_events.wiring import Wiring

log = logging.getLogger("strangler.inbox")


def json_response(data: Any, *, status: int = 200) -> Response:
    body = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    return Response(body, status_code=status, media_type="application/json")


def json_error(status: int, error: str, detail: str) -> Response:
    return json_response({"error": error, "detail": detail}, status=status)

Lifecycle = Callable[[Any], AbstractAsyncContextManager[None]]


def install(app: Any, *, database: Any, source: str, wiring: Wiring, handlers: Mapping[str, Handler]) -> None:
    """Give an app what the endpoints here and its lifespan need, on app.state."""
    app.state.wiring = wiring
    app.state.source = source
    app.state.event_handlers = dict(handlers)
    app.state.metrics = EventMetrics()
    app.state.relay = OutboxRelay(database, source=source, wiring=wiring, metrics=app.state.metrics)


def lifespan(*extra: Lifecycle) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """The app's lifespan: the relay runs while the app serves, then `extra` parts, in order."""

    @asynccontextmanager
    async def serving(app: Any) -> AsyncIterator[None]:
        relay: OutboxRelay = app.state.relay
        relay.start()
        try:
            async with _nested(app, list(extra)):
                yield
        finally:
            await relay.close()

    return serving


@asynccontextmanager
async def _nested(app: Any, parts: list[Lifecycle]) -> AsyncIterator[None]:
    if not parts:
        yield
        return
    async with parts[0](app):
        async with _nested(app, parts[1:]):
            yield


def refusal(request: Request) -> Response | None:
    """Why an internal endpoint will not serve this request, or None when it may."""
    if "x-forwarded-for" in request.headers:
        return json_error(404, "not_found", f"No API endpoint at {request.url.path}")
    token = request.app.state.wiring.events_token
    if token and not hmac.compare_digest(request.headers.get("authorization", "").encode(),
                                         f"Bearer {token}".encode()):
        return json_error(401, "unauthorized", "Internal endpoint: send the events token as a bearer token")
    return None


async def receive_event(request: Request) -> Response:
    if (refused := refusal(request)) is not None:
        return refused
    metrics: EventMetrics = request.app.state.metrics
    try:
        event = Event.from_message(json.loads(await request.body() or b"null"))
    except ValueError as exc:
        return json_error(400, "invalid", f"Not an event: {exc}")
    try:
        outcome = await run_in_threadpool(apply_event, request.app.state.database, event,
                                          request.app.state.event_handlers)
    except EventRejected as exc:
        metrics.inbox_events.labels(event.type, "rejected").inc()
        log.warning("inbox.rejected event=%s type=%s source=%s reason=%s", event.event_id, event.type,
                    event.source, exc)
        return json_error(409, "event_rejected", str(exc))
    metrics.inbox_events.labels(event.type, outcome).inc()
    return json_response({"event_id": event.event_id, "outcome": outcome})


def _status(request: Request) -> dict[str, Any]:
    relay: OutboxRelay = request.app.state.relay
    with request.app.state.database.reading() as conn:
        counts = outbox.delivery_counts(conn)
        total = outbox.total_events(conn)
        dead = len(outbox.list_dead_letters(conn))
    subscribers = [{"name": name, "url": url, "delivered": counts.get(name, {}).get("delivered", 0),
                    "retrying": counts.get(name, {}).get("pending", 0), "dead": counts.get(name, {}).get("dead", 0)}
                   for name, url in relay.subscribers.items()]
    return {"source": request.app.state.source, "relay": "running" if relay.running else "stopped",
            "events": total, "subscribers": subscribers, "dead_letters": dead}


async def outbox_status(request: Request) -> Response:
    if (refused := refusal(request)) is not None:
        return refused
    return json_response(await run_in_threadpool(_status, request))


async def dead_letters(request: Request) -> Response:
    if (refused := refusal(request)) is not None:
        return refused

    def read() -> list[dict[str, Any]]:
        with request.app.state.database.reading() as conn:
            return outbox.list_dead_letters(conn, include_replayed=request.query_params.get("all") == "1")

    letters = await run_in_threadpool(read)
    return json_response({"count": len(letters), "dead_letters": letters})


async def replay_dead_letter(request: Request) -> Response:
    if (refused := refusal(request)) is not None:
        return refused
    letter_id = request.path_params["letter_id"]

    def replay() -> dict[str, Any] | None:
        with request.app.state.database.transaction() as conn:
            return outbox.replay_dead_letter(conn, letter_id)

    letter = await run_in_threadpool(replay)
    if letter is None:
        return json_error(404, "not_found", f"No dead event letter {letter_id} waiting for a replay")
    request.app.state.relay.rewind()
    log.info("outbox.replayed letter=%d event=%s subscriber=%s", letter_id, letter["ref"], letter["subscriber"])
    return json_response({"replayed": letter})


async def stop_relay(request: Request) -> Response:
    if (refused := refusal(request)) is not None:
        return refused
    await request.app.state.relay.stop()
    return json_response(await run_in_threadpool(_status, request))


async def start_relay(request: Request) -> Response:
    if (refused := refusal(request)) is not None:
        return refused
    request.app.state.relay.start()
    return json_response(await run_in_threadpool(_status, request))


async def metrics(request: Request) -> Response:
    if (refused := refusal(request)) is not None:
        return refused
    body, content_type = request.app.state.metrics.render()
    return Response(body, media_type=content_type)


routes = [
    Route("/events/", receive_event, methods=["POST"], name="events-receive"),
    Route("/outbox/", outbox_status, name="outbox-status"),
    Route("/outbox/dead-letters/", dead_letters, name="outbox-dead-letters"),
    Route("/outbox/dead-letters/{letter_id:int}/replay/", replay_dead_letter, methods=["POST"],
          name="outbox-replay"),
    Route("/outbox/relay/stop/", stop_relay, methods=["POST"], name="outbox-relay-stop"),
    Route("/outbox/relay/start/", start_relay, methods=["POST"], name="outbox-relay-start"),
    Route("/metrics", metrics, name="metrics"),
]

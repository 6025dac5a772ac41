"""Liveness and readiness: live while the process runs, ready once its database is migrated."""

from __future__ import annotations

import sqlite3

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from extracted_services.common.db import unapplied_migrations
from extracted_services.common.http import json_response


def live(request: Request) -> Response:
    return json_response({"status": "ok", "service": request.app.state.service.name})


def ready(request: Request) -> Response:
    service, database = request.app.state.service, request.app.state.database
    body = {"service": service.name}
    if not database.path.exists():
        return json_response({**body, "status": "unavailable", "database": "missing"}, status=503)
    try:
        pending = unapplied_migrations(database, service.migrations)
    except sqlite3.Error as exc:
        return json_response({**body, "status": "unavailable", "database": str(exc)}, status=503)
    if pending:
        return json_response({**body, "status": "unavailable", "unapplied_migrations": pending}, status=503)
    return json_response({**body, "status": "ok"})


routes = [Route("/health/live", live, name="health-live"), Route("/health/ready", ready, name="health-ready")]

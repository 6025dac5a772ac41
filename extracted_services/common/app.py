"""Builds a service's ASGI app: its routes plus health, events, metrics, JSON errors, gzip and APPEND_SLASH."""

from __future__ import annotations

import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware

from domain_events import internal
from domain_events.wiring import Wiring
from extracted_services.common import health
from extracted_services.common.db import Database
from extracted_services.common.http import ApiError, api_error_handler, append_slash_or_not_found
from extracted_services.common.service import Service

REPO_ROOT = Path(__file__).resolve().parents[2]
GZIP_MINIMUM_SIZE = 500  # as the monolith, so both sides encode the same answers


def data_dir(override: str | os.PathLike | None = None) -> Path:
    """--data-dir, else $STRANGLER_DATA_DIR, else var/ in the repository (shared with the monolith)."""
    return Path(override or os.environ.get("STRANGLER_DATA_DIR") or REPO_ROOT / "var")


def database_for(service: Service, directory: Path) -> Database:
    return Database(directory / service.database_name)


def build_app(service: Service, directory: str | os.PathLike | None = None, *, wiring: Wiring | None = None) -> Starlette:
    """The service's app; `wiring` (default: from the environment) says where its events go and whom it calls."""
    lifecycle = [service.lifecycle] if service.lifecycle else []
    app = Starlette(
        routes=[*health.routes, *internal.routes, *service.routes],
        middleware=[Middleware(GZipMiddleware, minimum_size=GZIP_MINIMUM_SIZE)],
        exception_handlers={ApiError: api_error_handler},
        lifespan=internal.lifespan(*lifecycle),
    )
    # Our own APPEND_SLASH, building Location from X-Forwarded-*, like the monolith's.
    app.router.redirect_slashes = False
    app.router.default = append_slash_or_not_found
    app.state.service = service
    app.state.database = database_for(service, data_dir(directory))
    internal.install(app, database=app.state.database, source=service.name, wiring=wiring or Wiring.from_env(),
                     handlers=service.event_handlers)
    if service.configure is not None:
        service.configure(app)
    return app

"""The ASGI application: the URLconf behind the middleware stack, bound to one database."""

from __future__ import annotations

import html
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from domain_events import internal
from domain_events.wiring import Wiring
from legacy_monolith import settings, urls
from legacy_monolith.csrf import CsrfFailure
from legacy_monolith.db import Database
from legacy_monolith.events.handlers import EVENT_HANDLERS
from legacy_monolith.middleware import SessionMiddleware, append_slash_or_not_found
from legacy_monolith.shortcuts import ApiError, json_error


def _error_page(status: int, title: str, detail: str) -> HTMLResponse:
    body = f"<!doctype html><title>{html.escape(title)}</title><h1>{html.escape(title)}</h1><p>{html.escape(detail)}</p>"
    return HTMLResponse(body, status_code=status)


async def _api_error(request: Request, exc: ApiError) -> Response:
    if request.url.path.startswith("/api/"):
        return json_error(exc.status, exc.error, exc.detail)
    return _error_page(exc.status, exc.error.replace("_", " ").capitalize(), exc.detail)


async def _csrf_failure(request: Request, exc: CsrfFailure) -> Response:
    return _error_page(403, "Forbidden", f"CSRF verification failed. Request aborted. ({exc})")


def build_app(data_dir: Path | None = None, *, wiring: Wiring | None = None) -> Starlette:
    """The shop on one database; `wiring` (default: from the environment) says which services get its events."""
    data_dir = Path(data_dir) if data_dir is not None else settings.data_dir()
    database = Database(data_dir / settings.DATABASE_NAME)
    app = Starlette(
        lifespan=internal.lifespan(),       # the outbox relay runs while the shop serves
        routes=urls.urlpatterns,
        middleware=[
            Middleware(GZipMiddleware, minimum_size=settings.GZIP_MINIMUM_SIZE),
            Middleware(SessionMiddleware, database=database),
        ],
        exception_handlers={ApiError: _api_error, CsrfFailure: _csrf_failure},
    )
    # Our own APPEND_SLASH: Starlette's would build Location from the monolith's own
    # host and scheme, which behind the proxy points clients past it.
    app.router.redirect_slashes = False
    app.router.default = append_slash_or_not_found
    app.state.database = database
    app.state.upload_dir = data_dir / settings.UPLOAD_DIR_NAME
    internal.install(app, database=database, source="legacy", wiring=wiring or Wiring.from_env(),
                     handlers=EVENT_HANDLERS)
    return app

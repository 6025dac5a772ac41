"""The admin listener: metrics, health, the live routing table, reload, ramps and roll back all. Never on the
public port; every POST goes through the admin guard (token, Origin)."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .admin_guard import AdminGuard, admin_token
from .config.loader import ConfigError
from .control.api import control_routes
from .control.controller import Controller
from .reload import ConfigHolder
from .runtime import Runtime
from .shadow_state import compared_of, match_rate


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).isoformat()


def upstream_health(runtime: Runtime) -> dict[str, Any]:
    return {
        name: {
            "url": state.upstream.url,
            "checked": state.upstream.health is not None,
            "healthy": state.health.healthy,
            "checked_at": _iso(state.health.checked_at),
            "detail": state.health.detail,
            "in_flight": state.bulkhead.in_flight,
            "max_concurrent": state.bulkhead.max_concurrent,
        }
        for name, state in runtime.upstreams.items()
    }


_STATE_NAMES = {0: "closed", 1: "half_open", 2: "open"}


def routes_document(runtime: Runtime, worker_breakers: dict[tuple[str, str], int] | None = None) -> dict[str, Any]:
    """The live routing table; with workers, breaker states are the worst seen across them."""
    config = runtime.config
    routes = []
    for route_rt in runtime.routes.values():
        route = route_rt.route
        match = route.match
        routes.append({
            "name": route.name,
            "match": {
                "path": match.path,
                "methods": sorted(match.methods) if match.methods is not None else None,
                "headers": dict(match.headers),
                "host": match.host,
            },
            "split": {name: percent for name, percent in route_rt.shares},      # in force
            "config_split": {name: percent for name, percent in route.split},
            "split_source": runtime.overlay.source_for(route),                  # config, ramp or rollback_all
            "compose": {part.name: {"upstream": part.upstream, "path": part.target.text, "required": part.required}
                        for part in route.compose} or None,
            "fallback": route.fallback,
            "sticky": route.sticky.describe(),
            "strip_prefix": route.strip_prefix,
            "breakers": {
                name: breaker.snapshot() if worker_breakers is None
                else {"state": _STATE_NAMES[worker_breakers.get((route.name, name), 0)], "across_workers": True}
                for name, breaker in route_rt.breakers.items()
            },
        })
    return {
        "version": config.sha256,
        "source": config.source,
        "loaded_at": _iso(runtime.loaded_at),
        "routes": routes,
        "warnings": list(config.warnings),
    }


@dataclass(slots=True, eq=False)
class Readiness:
    """What /health/ready says beyond the config: draining after SIGTERM, and how the instance follows a controller."""

    draining_since: float | None = None          # wall clock; /health/ready answers 503 from then on
    control: Callable[[], dict[str, Any]] | None = None


def shadow_document(runtime: Runtime, across_workers: dict[str, dict[str, int]] | None = None) -> dict[str, Any]:
    """Each shadowed route: counts, match rate, the fields that differ most (latest mismatches: /samples).

    With workers, each one compares its own copies: the counts are added up from the metrics,
    and fields and samples stay in the workers.
    """
    routes = {}
    for name, route_rt in runtime.routes.items():
        if route_rt.shadow is None:
            continue
        found = route_rt.shadow.document()
        if across_workers is not None:
            counts = {result: across_workers.get(name, {}).get(result, 0) for result in found["counts"]}
            found.update(counts=counts, compared=compared_of(counts), match_rate=match_rate(counts),
                         across_workers=True)
        routes[name] = found
    return {"version": runtime.config.sha256, "routes": routes}


def create_admin_app(holder: ConfigHolder, on_reload: Callable[[], None] | None = None,
                     workers: bool = False, controller: Controller | None = None,
                     bound_host: str = "127.0.0.1", readiness: Readiness | None = None,
                     extra_routes: Sequence[BaseRoute] = ()) -> AdminGuard:
    """With `workers`, live state comes from the workers' metrics and `on_reload` passes reloads on to them.

    `controller` adds /ramps and /rollback-all; `bound_host` is the address the listener binds, for the
    Origin check; `extra_routes` are served too, those under /control/ only with the admin token.
    """
    readiness = readiness or Readiness()

    async def metrics(request: Request) -> Response:
        runtime = holder.runtime
        if runtime is not None:
            for route_rt in runtime.routes.values():
                for breaker in route_rt.breakers.values():
                    breaker.state    # an open breaker whose recovery time has passed turns half-open here
        body, content_type = holder.metrics.render()
        return Response(body, media_type=content_type)

    async def live(request: Request) -> Response:
        return JSONResponse({"status": "live"})

    async def ready(request: Request) -> Response:
        runtime = holder.runtime
        # Losing the controller never makes an instance unready: it serves on with the last shares.
        control = {"control": readiness.control()} if readiness.control is not None else {}
        if runtime is None:
            error = str(holder.last_error) if holder.last_error else "no config loaded"
            return JSONResponse({"status": "not ready", "error": error, **control}, status_code=503)
        if readiness.draining_since is not None:
            # Still serving; the balancer takes the instance out before its listener closes.
            return JSONResponse({"status": "draining", "since": _iso(readiness.draining_since),
                                 "version": runtime.config.sha256, **control}, status_code=503)
        return JSONResponse({"status": "ready", "version": runtime.config.sha256,
                             "upstreams": upstream_health(runtime), **control})

    async def routes(request: Request) -> Response:
        runtime = holder.runtime
        if runtime is None:
            return JSONResponse({"error": "no config loaded"}, status_code=503)
        worker_breakers = holder.metrics.breaker_states_across_workers() if workers else None
        return JSONResponse(routes_document(runtime, worker_breakers))

    async def shadow(request: Request) -> Response:
        runtime = holder.runtime
        if runtime is None:
            return JSONResponse({"error": "no config loaded"}, status_code=503)
        return JSONResponse(shadow_document(runtime, holder.metrics.shadow_counts_across_workers() if workers else None))

    async def shadow_samples(request: Request) -> Response:
        runtime = holder.runtime
        name = request.path_params["route"]
        route_rt = runtime.routes.get(name) if runtime is not None else None
        if route_rt is None or route_rt.shadow is None:
            return JSONResponse({"error": f"no route named {name!r} with a shadow"}, status_code=404)
        return JSONResponse({"route": name, "shadow": route_rt.shadow.policy.upstream,
                             "samples": list(reversed(route_rt.shadow.samples))})

    async def reload(request: Request) -> Response:
        try:
            runtime = holder.reload()
        except ConfigError as error:
            return JSONResponse({"status": "rejected", "errors": [str(p) for p in error.problems],
                                 "version": holder.runtime.config.sha256 if holder.runtime else None},
                                status_code=422)
        if on_reload is not None:
            on_reload()
        return JSONResponse({"status": "reloaded", "version": runtime.config.sha256,
                             "loaded_at": _iso(runtime.loaded_at)})

    app = Starlette(routes=[
        Route("/metrics", metrics),
        Route("/health/live", live),
        Route("/health/ready", ready),
        Route("/routes", routes),
        Route("/reload", reload, methods=["POST"]),
        Route("/shadow", shadow),
        Route("/shadow/{route}/samples", shadow_samples),
        *(control_routes(controller) if controller is not None else ()),
        *extra_routes,
    ])
    return AdminGuard(app, lambda: admin_token(holder.runtime.config if holder.runtime else None), bound_host,
                      private=("/control/",))

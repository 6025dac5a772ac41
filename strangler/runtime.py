"""Runtime state for one loaded config, built aside and swapped whole on reload.

State that must outlive a reload (breakers of unchanged (route, upstream)
pairs, bulkheads, retry budgets, connection pools of unchanged upstreams) is
carried over from the previous runtime; the config itself stays frozen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from resilience.breaker import BreakerState, CircuitBreaker
from resilience.budget import RetryBudget

from .bulkhead import Bulkhead
from .config.model import Config, Route, Upstream
from .forward import Connector, UpstreamClient
from .metrics import Metrics, PairMetrics
from .overlay import EMPTY, Overlay, Split
from .routing import RequestHead, RoutingTable
from .shadow_state import ShadowState
from .split import SplitTable


@dataclass(slots=True, eq=False)
class HealthStatus:
    healthy: bool | None = None          # None: not checked (yet), or no check configured
    checked_at: float | None = None      # wall clock
    detail: str = ""


@dataclass(slots=True, eq=False)
class UpstreamState:
    upstream: Upstream
    client: UpstreamClient
    bulkhead: Bulkhead
    budget: RetryBudget
    health: HealthStatus = field(default_factory=HealthStatus)


@dataclass(slots=True, eq=False)
class RouteRuntime:
    route: Route
    split: SplitTable
    breakers: dict[str, CircuitBreaker]
    pairs: dict[str, PairMetrics]
    shares: Split = ()                   # the split in force: the config's, or the overlay's (ramp, roll back all)
    shadow: ShadowState | None = None


class Runtime:
    """Everything a request needs, read through one reference per request."""

    def __init__(self, config: Config, routes: dict[str, RouteRuntime], upstreams: dict[str, UpstreamState],
                 overlay: Overlay = EMPTY) -> None:
        self.config = config
        self.routes = routes
        self.upstreams = upstreams
        self.overlay = overlay
        self.table = RoutingTable(config.routes)
        self.keeps_encoded_slash = any(route.encoded_slash == "keep" for route in config.routes)
        self._by_route = {route: routes[route.name] for route in config.routes}
        self.loaded_at = time.time()

    def match(self, request: RequestHead) -> RouteRuntime | None:
        route = self.table.match(request)
        return None if route is None else self._by_route[route]


def _budget_ratio(config: Config, upstream: str) -> float:
    # Routes may set different budgets for one upstream; the strictest protects it.
    ratios = [route.retry.budget_ratio for route in config.routes if upstream in route.upstream_names]
    return min(ratios) if ratios else 0.2


def build_runtime(config: Config, metrics: Metrics, previous: Runtime | None = None, *,
                  connector: Connector | None = None, clock: Callable[[], float] = time.monotonic,
                  overlay: Overlay = EMPTY) -> tuple[Runtime, list[UpstreamClient]]:
    """A runtime for `config` with `overlay`'s shares, reusing what `previous` holds; returns the clients it retires.

    The clients it creates open their connections with `connector` (by default TCP); clients
    carried over keep the connector they were made with. New breakers and retry budgets read
    `clock` (tests inject one).
    """
    old_upstreams = previous.upstreams if previous else {}
    upstreams: dict[str, UpstreamState] = {}
    retired: list[UpstreamClient] = []
    for upstream in config.upstreams:
        old = old_upstreams.get(upstream.name)
        ratio = _budget_ratio(config, upstream.name)
        if old is None:
            client = UpstreamClient(upstream, connector=connector)
            state = UpstreamState(upstream, client, Bulkhead(upstream.max_concurrent), RetryBudget(ratio, clock=clock))
        else:
            client = old.client
            if client.settings != UpstreamClient(upstream).settings:
                retired.append(client)
                client = UpstreamClient(upstream, connector=connector)
            old.bulkhead.resize(upstream.max_concurrent)
            old.budget.ratio = ratio
            health = old.health if old.upstream.health == upstream.health else HealthStatus()
            state = UpstreamState(upstream, client, old.bulkhead, old.budget, health)
        upstreams[upstream.name] = state
    retired.extend(old.client for name, old in old_upstreams.items() if name not in upstreams)

    old_routes = previous.routes if previous else {}
    routes: dict[str, RouteRuntime] = {}
    for route in config.routes:
        old_route = old_routes.get(route.name)
        breakers: dict[str, CircuitBreaker] = {}
        # Copies go through the shadow upstream's own breaker on this route.
        shadow = (route.shadow.upstream,) if route.shadow and route.shadow.upstream not in route.upstream_names else ()
        for name in route.upstream_names + shadow:
            kept = old_route.breakers.get(name) if old_route else None
            if kept is not None and kept.policy == route.breaker:
                breakers[name] = kept
            else:
                breakers[name] = _new_breaker(route, name, metrics, clock)
            metrics.breaker_state.labels(route.name, name).set(int(breakers[name].state))
        shares = overlay.split_for(route)
        routes[route.name] = RouteRuntime(
            route=route,
            split=SplitTable(route.name, shares),
            breakers=breakers,
            pairs={name: metrics.pair(route.name, name) for name in route.upstream_names},
            shares=shares,
            shadow=_shadow_state(route, old_route),
        )
    _publish_config_gauges(config, metrics, previous, routes)
    return Runtime(config, routes, upstreams, overlay), retired


def _shadow_state(route: Route, old_route: RouteRuntime | None) -> ShadowState | None:
    """The route's shadow, keeping its counts while its `shadow:` block is unchanged."""
    if route.shadow is None:
        return None
    kept = old_route.shadow if old_route is not None else None
    return kept if kept is not None and kept.policy == route.shadow else ShadowState(route.name, route.shadow)


def _new_breaker(route: Route, upstream: str, metrics: Metrics, clock: Callable[[], float]) -> CircuitBreaker:
    gauge = metrics.breaker_state.labels(route.name, upstream)

    def on_transition(old: BreakerState, new: BreakerState) -> None:
        gauge.set(int(new))
        metrics.breaker_transitions.labels(route.name, upstream, new.name.lower()).inc()

    return CircuitBreaker(route.breaker, on_transition=on_transition, name=f"{route.name}/{upstream}", clock=clock)


def _publish_config_gauges(config: Config, metrics: Metrics, previous: Runtime | None,
                           routes: dict[str, RouteRuntime]) -> None:
    if previous is not None:
        # Zero before removing: in multiprocess mode the last value stays in the worker's file.
        if previous.config.sha256 != config.sha256:
            _retire_child(metrics.config_info, previous.config.sha256)
        current = {(route.name, name) for route in config.routes for name, _ in route.split}
        for route in previous.config.routes:
            for name, _ in route.split:
                if (route.name, name) not in current:
                    _retire_child(metrics.split_percent, route.name, name)
        legacy_now = {(route.name, config.legacy_side(route)) for route in config.routes}
        for route in previous.config.routes:
            side = previous.config.legacy_side(route)
            if side is not None and (route.name, side) not in legacy_now:
                _retire_child(metrics.route_legacy, route.name, side)
    metrics.config_info.labels(config.sha256).set(1)
    for route in config.routes:
        for name, percent in routes[route.name].shares:
            metrics.split_percent.labels(route.name, name).set(percent)
        legacy_side = config.legacy_side(route)
        if legacy_side is not None:
            metrics.route_legacy.labels(route.name, legacy_side).set(1)


def _retire_child(metric, *labels: str) -> None:
    metric.labels(*labels).set(0)
    metric.remove(*labels)

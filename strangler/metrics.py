"""Prometheus metrics: the contract's names, one registry per app instance.

The only module that imports prometheus_client. Labelled children are cached
per (route, upstream) so the hot path does no label lookups.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    CONTENT_TYPE_LATEST,
)
from prometheus_client import multiprocess

DURATION_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A WebSocket stays open from a second to hours.
WEBSOCKET_BUCKETS_S = (1.0, 10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 4 * 3600.0, 24 * 3600.0)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        # In multiprocess mode a gauge says how the workers' values combine.
        live_sum = {"multiprocess_mode": "livesum"}
        live_max = {"multiprocess_mode": "livemax"}
        self.requests = Counter("strangler_requests_total", "Requests answered, by route, upstream, method and status code.",
                                ["route", "upstream", "method", "code"], registry=r)
        self.duration = Histogram("strangler_request_duration_seconds", "Time from request to the end of the response.",
                                  ["route", "upstream"], buckets=DURATION_BUCKETS_S, registry=r)
        self.attempts = Counter("strangler_upstream_attempts_total", "Attempts sent to upstreams, by outcome.",
                                ["route", "upstream", "outcome"], registry=r)
        self.retries = Counter("strangler_retries_total", "Attempts after the first.", ["route", "upstream"], registry=r)
        self.breaker_state = Gauge("strangler_circuit_breaker_state", "0 closed, 1 half-open, 2 open.",
                                   ["route", "upstream"], registry=r, **live_max)
        self.breaker_transitions = Counter("strangler_circuit_breaker_transitions_total", "Breaker state changes.",
                                           ["route", "upstream", "to"], registry=r)
        self.fallbacks = Counter("strangler_fallbacks_total", "Requests the fallback took, and why.",
                                 ["route", "from_upstream", "to_upstream", "reason"], registry=r)
        self.bulkhead_rejections = Counter("strangler_bulkhead_rejections_total", "Requests refused by a full bulkhead.",
                                           ["upstream"], registry=r)
        self.inflight = Gauge("strangler_inflight_requests", "Requests in flight to an upstream.", ["upstream"],
                              registry=r, **live_sum)
        self.split_percent = Gauge("strangler_split_percent", "The share of a route per upstream in force: the config's, or a ramp's or roll back all's.",
                                   ["route", "upstream"], registry=r, **live_max)
        self.reloads = Counter("strangler_config_reloads_total", "Config loads by result.", ["result"], registry=r)
        for result in ("success", "failure"):
            # Both series exist from the start, so that increase() sees the first failure.
            self.reloads.labels(result)
        self.config_info = Gauge("strangler_config_info", "The loaded config's version (sha256).", ["version"],
                                 registry=r, **live_max)
        self.upstream_healthy = Gauge("strangler_upstream_healthy", "1 when the last active health check passed.",
                                      ["upstream"], registry=r, **live_max)
        self.proxy_errors = Counter("strangler_proxy_errors_total", "Answers made by the proxy itself, by reason.",
                                    ["route", "upstream", "reason"], registry=r)
        # Which side of each route is the monolith, for queries that set new against legacy.
        self.route_legacy = Gauge("strangler_route_legacy_info", "1 for the upstream that is a route's legacy side.",
                                  ["route", "upstream"], registry=r, **live_max)
        # --- WebSocket tunnels (websocket.py, tunnel.py) -------------------------------------------
        self.websocket_connections = Gauge("strangler_websocket_connections", "Open WebSocket tunnels.",
                                           ["route", "upstream"], registry=r, **live_sum)
        self.websocket_duration = Histogram("strangler_websocket_duration_seconds",
                                            "How long WebSocket tunnels stayed open.", ["route", "upstream"],
                                            buckets=WEBSOCKET_BUCKETS_S, registry=r)
        self.websocket_closed = Counter("strangler_websocket_closed_total",
                                        "WebSocket tunnels ended, by why (tunnel.END_REASONS).",
                                        ["route", "upstream", "reason"], registry=r)
        # --- end of WebSocket tunnels ------------------------------------------------------------------
        # --- shadow traffic (route `shadow:` blocks) ---------------------------------------------------
        self.shadow_requests = Counter("strangler_shadow_requests_total",
                                       "Copies of requests sent to a shadow upstream, by what the comparison found.",
                                       ["route", "shadow", "result"], registry=r)
        self.shadow_duration = Histogram("strangler_shadow_duration_seconds",
                                         "Time from sending a copy to the shadow's whole answer (or its failure).",
                                         ["route", "shadow"], buckets=DURATION_BUCKETS_S, registry=r)
        # --- end of shadow traffic -------------------------------------------------------------------
        self.control = ControlMetrics(r)
        self._follower: FollowerMetrics | None = None
        self._shadow_cache: dict[tuple[str, str], ShadowMetrics] = {}
        self._requests_cache: dict[tuple[str, str, str, int], Counter] = {}
        self._pair_cache: dict[tuple[str, str], PairMetrics] = {}
        self._inflight_cache: dict[str, Gauge] = {}
        # --- composite routes (compose.py) -------------------------------------------------------------
        self.compose_parts = Counter("strangler_compose_parts_total",
                                     "Parts of composite answers, by what became of them (ok, or why missing).",
                                     ["route", "part", "outcome"], registry=r)
        self._compose_cache: dict[tuple[str, str, str], Counter] = {}
        # --- end of composite routes -------------------------------------------------------------------

    def follower(self) -> "FollowerMetrics":
        """The gauges of an instance that follows a controller; registered only by one that does."""
        if self._follower is None:
            self._follower = FollowerMetrics(self.registry)
        return self._follower

    def pair(self, route: str, upstream: str) -> "PairMetrics":
        key = (route, upstream)
        found = self._pair_cache.get(key)
        if found is None:
            found = self._pair_cache[key] = PairMetrics(self, route, upstream)
        return found

    def shadow(self, route: str, shadow: str) -> "ShadowMetrics":
        key = (route, shadow)
        found = self._shadow_cache.get(key)
        if found is None:
            found = self._shadow_cache[key] = ShadowMetrics(self, route, shadow)
        return found

    def inflight_of(self, upstream: str) -> Gauge:
        child = self._inflight_cache.get(upstream)
        if child is None:
            child = self._inflight_cache[upstream] = self.inflight.labels(upstream)
        return child

    def count_request(self, route: str, upstream: str, method: str, code: int) -> None:
        key = (route, upstream, method, code)
        child = self._requests_cache.get(key)
        if child is None:
            child = self._requests_cache[key] = self.requests.labels(route, upstream, method, str(code))
        child.inc()

    # --- composite routes ----------------------------------------------------------------------------

    def count_compose_part(self, route: str, part: str, outcome: str) -> None:
        key = (route, part, outcome)
        child = self._compose_cache.get(key)
        if child is None:
            child = self._compose_cache[key] = self.compose_parts.labels(route, part, outcome)
        child.inc()

    # --- end of composite routes ---------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        directory = multiprocess_dir()
        if directory:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=directory)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


    def shadow_counts_across_workers(self) -> dict[str, dict[str, int]]:
        """With several workers, each compares its own copies: the results per route, added up."""
        counts: dict[str, dict[str, int]] = {}
        for sample in self._collect_across_workers("strangler_shadow_requests"):
            if sample.name == "strangler_shadow_requests_total":
                route = counts.setdefault(sample.labels["route"], {})
                route[sample.labels["result"]] = route.get(sample.labels["result"], 0) + int(sample.value)
        return counts

    def _collect_across_workers(self, family_name: str) -> list:
        directory = multiprocess_dir()
        if not directory:
            return []
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
        return [sample for family in registry.collect() if family.name in (family_name, family_name + "_total")
                for sample in family.samples]

    def breaker_states_across_workers(self) -> dict[tuple[str, str], int]:
        """With several workers, each keeps its own breakers: the worst state per (route, upstream)."""
        directory = multiprocess_dir()
        if not directory:
            return {}
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
        states: dict[tuple[str, str], int] = {}
        for family in registry.collect():
            if family.name != "strangler_circuit_breaker_state":
                continue
            for sample in family.samples:
                key = (sample.labels["route"], sample.labels["upstream"])
                states[key] = max(states.get(key, 0), int(sample.value))
        return states


class ShadowMetrics:
    """The shadow children for one (route, shadow upstream), bound once."""

    __slots__ = ("duration", "results", "_metrics", "_route", "_shadow")

    def __init__(self, metrics: Metrics, route: str, shadow: str) -> None:
        self._metrics = metrics
        self._route = route
        self._shadow = shadow
        self.duration = metrics.shadow_duration.labels(route, shadow)
        self.results: dict[str, Counter] = {}

    def result(self, result: str) -> None:
        child = self.results.get(result)
        if child is None:
            child = self.results[result] = self._metrics.shadow_requests.labels(self._route, self._shadow, result)
        child.inc()


class PairMetrics:
    """The children for one (route, upstream), bound once."""

    __slots__ = ("duration", "retries", "attempt_outcomes", "_metrics", "_route", "_upstream")

    def __init__(self, metrics: Metrics, route: str, upstream: str) -> None:
        self._metrics = metrics
        self._route = route
        self._upstream = upstream
        self.duration = metrics.duration.labels(route, upstream)
        self.retries = metrics.retries.labels(route, upstream)
        self.attempt_outcomes: dict[str, Counter] = {}

    def attempt(self, outcome: str) -> None:
        child = self.attempt_outcomes.get(outcome)
        if child is None:
            child = self.attempt_outcomes[outcome] = self._metrics.attempts.labels(self._route, self._upstream, outcome)
        child.inc()


# -- control plane: ramps and roll back all ----------------------------------------------------------
# Set by the controller (the parent process with --workers); the data path writes none of these.

class ControlMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        live_max = {"multiprocess_mode": "livemax"}
        self.ramp_percent = Gauge("strangler_ramp_percent", "A ramped route's share per upstream in force.",
                                  ["route", "upstream"], registry=r, **live_max)
        self.ramp_state = Gauge("strangler_ramp_state", "1 for a ramp's current state, 0 for the others.",
                                ["route", "state"], registry=r, **live_max)
        self.ramp_decisions = Counter("strangler_ramp_decisions_total", "Ramp decisions, and the gate that decided.",
                                      ["route", "decision", "gate"], registry=r)
        self.rollback_all_active = Gauge("strangler_rollback_all_active", "1 while roll back all holds.",
                                         registry=r, **live_max)
        self.controller_errors = Counter("strangler_controller_errors_total",
                                         "Exceptions in the controller (the proxy serves on with the last shares).",
                                         registry=r)

    @staticmethod
    def retire(metric: Gauge, *labels: str) -> None:
        # Zero before removing: in multiprocess mode the last value stays in the process's file.
        metric.labels(*labels).set(0)
        metric.remove(*labels)


class FollowerMetrics:
    """Set by a proxy instance that takes its shares from a controller (`strangler run --control`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        live_max = {"multiprocess_mode": "livemax"}
        self.connected = Gauge("strangler_control_connected", "1 while the controller answers this instance, else 0.",
                               registry=registry, **live_max)
        self.overlay_age = Gauge("strangler_control_overlay_age_seconds",
                                 "Seconds since the controller last confirmed the shares in force (0 while connected).",
                                 registry=registry, **live_max)


Sample = tuple[str, dict[str, str], float]


def read_samples(metrics: Metrics, names: frozenset[str]) -> list[Sample]:
    """(sample name, labels, value) of the families called `names`: this process's, or every worker's."""
    directory = multiprocess_dir()
    if directory:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
        families = registry.collect()
    else:
        # Only the families asked for (without their _created samples): the whole registry grows with
        # every route and upstream, and this runs on the proxy's own event loop.
        wanted = {name + suffix for name in names for suffix in ("", "_total", "_bucket", "_count", "_sum")}
        families = metrics.registry.restricted_registry(wanted).collect()
    return [(sample.name, sample.labels, sample.value)
            for family in families if family.name in names for sample in family.samples]

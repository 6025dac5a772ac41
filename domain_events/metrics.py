"""Prometheus metrics for events and sagas, one registry per app (the services are separate apps).

The only module in the playground that imports prometheus_client; each side serves
its registry on its own `GET /metrics`.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest


class EventMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.outbox_delivered = Counter("outbox_events_delivered_total", "Events a subscriber acknowledged.",
                                        ["subscriber"], registry=r)
        self.outbox_failures = Counter("outbox_delivery_failures_total", "Failed deliveries, to be retried.",
                                       ["subscriber", "reason"], registry=r)
        self.outbox_dead_letters = Counter("outbox_dead_letters_total", "Events given up on, by subscriber.",
                                           ["subscriber"], registry=r)
        self.outbox_pruned = Counter("outbox_pruned_total", "Acknowledged events and processed event ids "
                                     "removed after the retention time.", ["what"], registry=r)
        self.outbox_pending = Gauge("outbox_pending_events", "Events not yet delivered, by subscriber.",
                                    ["subscriber"], registry=r)
        self.inbox_events = Counter("inbox_events_total", "Events received, by type and outcome "
                                    "(applied, duplicate, ignored, rejected).", ["type", "outcome"], registry=r)
        self.saga_started = Counter("saga_started_total", "Order sagas begun.", registry=r)
        self.saga_completed = Counter("saga_completed_total", "Order sagas ended, by outcome "
                                      "(completed, compensated, dead).", ["outcome"], registry=r)
        self.saga_step_failures = Counter("saga_step_failures_total", "Saga steps that failed, by step and kind.",
                                          ["step", "kind"], registry=r)
        self.saga_dead_letters = Counter("saga_dead_letters_total", "Sagas that could neither finish nor "
                                         "compensate.", registry=r)
        self.client_attempts = Counter("service_client_attempts_total", "Calls to other services, by outcome.",
                                       ["peer", "outcome"], registry=r)

    def client_observer(self, peer: str):
        """The on_attempt hook for a ServiceClient talking to `peer`."""
        return lambda outcome: self.client_attempts.labels(peer, outcome).inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

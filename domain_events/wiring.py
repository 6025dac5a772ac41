"""How one process is wired to the others: where its events go, which services it calls.

Shared by the monolith and the services. Read once at start, from flags or the
environment (`STRANGLER_PUBLISH_TO`, `STRANGLER_PEERS`, `STRANGLER_EVENTS_TOKEN`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

PUBLISH_TO_ENV = "STRANGLER_PUBLISH_TO"      # "orders=http://127.0.0.1:8101,inventory=http://..."
PEERS_ENV = "STRANGLER_PEERS"                # "inventory=http://127.0.0.1:8102,payments=http://..."
EVENTS_TOKEN_ENV = "STRANGLER_EVENTS_TOKEN"  # shared secret for /events/ and the other internal endpoints


@dataclass(frozen=True, slots=True, kw_only=True)
class Wiring:
    """Subscribers, peers and the knobs of the relay and the saga; frozen, read once."""

    publish_to: tuple[tuple[str, str], ...] = ()   # (subscriber name, base URL) that get our events
    peers: tuple[tuple[str, str], ...] = ()        # (service name, base URL) this process calls
    events_token: str | None = None
    # The outbox relay.
    relay_interval_s: float = 0.1          # how often it looks for new events
    relay_max_attempts: int = 8            # failed deliveries of one event before it is dead-lettered
    relay_backoff_initial_s: float = 0.2
    relay_backoff_max_s: float = 10.0
    retention_s: float = 7 * 24 * 3600     # acknowledged events and processed ids older than this are pruned
    prune_interval_s: float = 3600.0       # how often the relay prunes
    # Service-to-service calls.
    call_timeout_s: float = 5.0
    call_connect_timeout_s: float = 1.0
    call_attempts: int = 3
    breaker_recovery_timeout_s: float = 5.0
    # The order saga.
    saga_retry_initial_s: float = 0.2      # pause before a step whose service was unavailable runs again
    saga_retry_max_s: float = 10.0
    saga_step_attempts: int = 3            # rounds a forward step may fail transiently before compensation
    saga_compensation_attempts: int = 20   # rounds compensation may fail before the saga is dead-lettered
    place_wait_s: float = 8.0              # how long POST /api/orders/ waits for the saga before 202

    def peer(self, name: str, default: str) -> str:
        return dict(self.peers).get(name, default)

    def with_(self, **changes: object) -> "Wiring":
        return replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> "Wiring":
        env = os.environ if environ is None else environ
        wiring = cls(publish_to=parse_pairs(env.get(PUBLISH_TO_ENV, "").split(","), what=PUBLISH_TO_ENV),
                     peers=parse_pairs(env.get(PEERS_ENV, "").split(","), what=PEERS_ENV),
                     events_token=env.get(EVENTS_TOKEN_ENV) or None)
        return replace(wiring, **overrides) if overrides else wiring


def parse_pairs(items: Iterable[str], *, what: str) -> tuple[tuple[str, str], ...]:
    """'name=http://host:port' items (blanks skipped) as (name, url) pairs; ValueError names the bad one."""
    pairs = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        name, sep, url = item.partition("=")
        if not sep or not name.strip() or not url.strip().startswith(("http://", "https://")):
            raise ValueError(f"{what}: expected NAME=http://HOST:PORT, found {item!r}")
        pairs.append((name.strip(), url.strip().rstrip("/")))
    return tuple(pairs)

"""One route's shadow: its settings, the copies in flight, and what the copies came to.

Kept across a reload while the route's `shadow:` block is unchanged. Its memory is bounded:
counts, at most MAX_FIELDS differing fields with one example each, and a ring of the latest
mismatches whose Authorization, Cookie and Set-Cookie values are removed.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections import Counter, deque
from typing import Any

from .compare import Answer, Comparer, Difference, decoded_body
from .config.model import Shadow

RESULTS = ("match", "mismatch", "noise", "shadow_error", "skipped")
SAMPLES_KEPT = 50
MAX_FIELDS = 500           # distinct differing fields counted per route; later ones only in the totals
TOP_FIELDS = 10
EXCERPT_BYTES = 1024
_REMOVED = frozenset({b"authorization", b"cookie", b"set-cookie", b"proxy-authorization"})


class ShadowState:
    __slots__ = ("route", "policy", "comparer", "in_flight", "tasks", "since", "counts", "skipped", "errors",
                 "_fields", "_noise", "samples")

    def __init__(self, route: str, policy: Shadow) -> None:
        self.route = route
        self.policy = policy
        self.comparer = Comparer(policy.compare, policy.max_body_bytes)
        self.in_flight = 0                      # copies started and not yet counted
        self.tasks: set[asyncio.Task[None]] = set()     # the copies running: the loop keeps only weak references
        self.since = time.time()
        self.counts = dict.fromkeys(RESULTS, 0)
        self.skipped: Counter[str] = Counter()  # by reason
        self.errors: Counter[str] = Counter()   # by the shadow's failure
        self._fields: dict[str, list[Any]] = {}     # field -> [count, first Difference seen]
        self._noise: Counter[str] = Counter()       # fields in which the primary differed from itself
        self.samples: deque[dict[str, Any]] = deque(maxlen=SAMPLES_KEPT)

    # --- what a copy came to ---------------------------------------------------------------------

    def count(self, result: str, reason: str | None = None) -> None:
        self.counts[result] += 1
        if result == "skipped" and reason:
            self.skipped[reason] += 1
        elif result == "shadow_error" and reason:
            self.errors[reason] += 1

    def learn_noise(self, fields: set[str]) -> None:
        for field in fields:
            if field in self._noise or len(self._noise) < MAX_FIELDS:
                self._noise[field] += 1

    def only_noise(self, differences: list[Difference]) -> bool:
        """True when every difference is in a field where the primary was seen to differ from itself."""
        return all(difference.field in self._noise for difference in differences)

    def mismatch(self, differences: list[Difference], sample: dict[str, Any]) -> None:
        self.count("mismatch")
        for difference in differences:
            entry = self._fields.get(difference.field)
            if entry is not None:
                entry[0] += 1
            elif len(self._fields) < MAX_FIELDS:
                self._fields[difference.field] = [1, difference]
        self.samples.append(sample)

    # --- for the admin listener ------------------------------------------------------------------

    def document(self) -> dict[str, Any]:
        policy = self.policy
        counts = self.counts
        compared = compared_of(counts)
        top = sorted(self._fields.items(), key=lambda item: -item[1][0])[:TOP_FIELDS]
        return {
            "shadow": policy.upstream,
            "percent": policy.percent,
            "methods": sorted(policy.methods),
            "allow_writes": policy.allow_writes,
            "max_concurrent": policy.max_concurrent,
            "max_body_bytes": policy.max_body_bytes,
            "noise": "learn" if policy.compare.learn_noise else "off",
            "since": _iso(self.since),
            "in_flight": self.in_flight,
            "counts": dict(counts),
            "compared": compared,
            "match_rate": match_rate(counts),
            "skipped": dict(self.skipped),
            "errors": dict(self.errors),
            "fields": [{"field": field, "count": count, "example": {"primary": example.primary,
                                                                     "shadow": example.shadow}}
                       for field, (count, example) in top],
            "noise_fields": [{"field": field, "count": count} for field, count in self._noise.most_common(TOP_FIELDS)],
            "samples": len(self.samples),
        }


def compared_of(counts: dict[str, int]) -> int:
    return counts["match"] + counts["mismatch"] + counts["noise"]


def match_rate(counts: dict[str, int]) -> float | None:
    """The share of compared copies that answered like the primary: a copy that differs only where
    the primary differs from itself (noise) counts as a match."""
    compared = compared_of(counts)
    return round((counts["match"] + counts["noise"]) / compared, 4) if compared else None


def sample(method: str, target: str, request_headers: list[tuple[bytes, bytes]], request_id: str,
           primary_upstream: str, primary: Answer, shadow_upstream: str, shadow: Answer,
           differences: list[Difference], *, limit: int) -> dict[str, Any]:
    """A mismatch as the samples endpoint shows it: no credential values, bodies cut short."""
    return {
        "at": _iso(time.time()),
        "request_id": request_id,
        "request": {"method": method, "target": target, "headers": _headers(request_headers)},
        "primary": _answer(primary_upstream, primary, limit),
        "shadow": _answer(shadow_upstream, shadow, limit),
        "differences": [{"field": d.field, "primary": d.primary, "shadow": d.shadow} for d in differences],
    }


def _answer(upstream: str, answer: Answer, limit: int) -> dict[str, Any]:
    try:
        body = decoded_body(answer, limit)
    except Exception:  # noqa: BLE001 - the excerpt is best effort: a body that will not decode shows as it came
        body = None
    shown = answer.body if body is None else body
    return {
        "upstream": upstream,
        "status": answer.status,
        "headers": _headers(answer.headers),
        "body_bytes": len(shown),
        "body_excerpt": shown[:EXCERPT_BYTES].decode("utf-8", "replace"),
    }


def _headers(raw: list[tuple[bytes, bytes]]) -> list[list[str]]:
    return [[name.decode("latin-1"), "(removed)" if name.lower() in _REMOVED else value.decode("latin-1")]
            for name, value in raw]


def _iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).isoformat(timespec="seconds")

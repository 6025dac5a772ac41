"""What the dashboard shows beyond the proxy's own state, from the parts of strangler that keep it.

Ramps with roll back all, and shadow traffic, plug in here as callables that return
their admin documents (GET /ramps, GET /shadow). A part that is absent leaves its
section of the page "not configured"; one that fails leaves it "unavailable" and
the rest of the page as it is. Only the fields the page shows are taken, so a
document may carry more.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("strangler.dashboard")

Document = dict[str, Any]
TOP_FIELDS = 5
RAMP_FIELDS = ("to", "legacy", "state", "percent", "steps", "step", "next_step", "every_s", "on_breach",
               "next_evaluation_at", "frozen_by_rollback_all")
ROLLBACK_FIELDS = ("active", "reason", "since", "by", "legacy", "routes", "left")


@dataclass(frozen=True, slots=True, kw_only=True)
class DashboardSources:
    """The documents the page shows when strangler has them; None where it does not."""

    ramps: Callable[[], Document] | None = None     # GET /ramps: {"rollback_all": {...}, "ramps": [{"route": ...}]}
    shadow: Callable[[], Document] | None = None    # GET /shadow: per route, counts, match rate, top fields
    token_required: Callable[[], bool] | None = None    # whether admin POSTs need the admin token


@dataclass(frozen=True, slots=True)
class Found:
    """A source's document as the page uses it: absent (not configured), failed (unavailable), or read."""

    configured: bool
    document: Document | None = None

    @property
    def available(self) -> bool:
        return self.document is not None


def read(source: Callable[[], Document] | None, name: str) -> Found:
    if source is None:
        return Found(False)
    try:
        return Found(True, source())
    except Exception:
        log.exception("dashboard.source_error source=%s", name)
        return Found(True)


def ramps_by_route(document: Document | None) -> dict[str, Document]:
    found = {}
    for ramp in (document or {}).get("ramps") or ():
        if isinstance(ramp, dict) and isinstance(ramp.get("route"), str):
            shown = {key: ramp.get(key) for key in RAMP_FIELDS}
            decisions = ramp.get("last_decisions") or ()
            last = decisions[0] if decisions and isinstance(decisions[0], dict) else None
            shown["last_decision"] = None if last is None else {
                key: last.get(key) for key in ("at", "decision", "event", "gate", "reason")}
            found[ramp["route"]] = shown
    return found


def rollback_all(document: Document | None) -> Document | None:
    state = (document or {}).get("rollback_all")
    if not isinstance(state, dict):
        return None
    return {key: state.get(key) for key in ROLLBACK_FIELDS}


def shadow_by_route(document: Document | None) -> dict[str, Document]:
    """Per route: the shadow upstream, its match rate and the fields that differ most, with their counts."""
    routes = (document or {}).get("routes") or ()
    entries = routes.items() if isinstance(routes, dict) else ((None, entry) for entry in routes)
    found = {}
    for name, entry in entries:
        if not isinstance(entry, dict):
            continue
        name = name or entry.get("route") or entry.get("name")
        if not isinstance(name, str):
            continue
        found[name] = {"shadow": entry.get("shadow") or entry.get("upstream"),
                       "match_rate": entry.get("match_rate"),
                       "top_fields": _top_fields(entry.get("top_fields") or entry.get("fields")
                                                 or entry.get("differing_fields"))}
    return found


def _top_fields(fields: Any) -> list[Document]:
    if isinstance(fields, dict):
        pairs = list(fields.items())
    elif isinstance(fields, list):
        pairs = [(item.get("field") or item.get("path"), item.get("count")) for item in fields if isinstance(item, dict)]
    else:
        return []
    pairs = [(str(path), count) for path, count in pairs if path is not None and isinstance(count, (int, float))]
    pairs.sort(key=lambda pair: -pair[1])
    return [{"field": path, "count": count} for path, count in pairs[:TOP_FIELDS]]

"""The dashboard's server side: the history it keeps, and GET /dashboard.json built from it.

The routes, their splits in force and their breakers come from the same document
as GET /routes, so the page shows what the admin API says; the figures come from
the history; ramps, roll back all and shadow traffic from their sources.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from ..metrics import read_samples
from ..reload import ConfigHolder
from . import sources as source
from .history import FAMILIES, INTERVAL_S, History, Sides
from .sources import DashboardSources

SERIES = ("new_rps", "legacy_rps", "new_error_rate", "legacy_error_rate", "new_p95_ms", "legacy_p95_ms")


class Dashboard:
    def __init__(self, holder: ConfigHolder, sources: DashboardSources | None = None, *,
                 interval_s: float = INTERVAL_S, clock: Callable[[], float] = time.time) -> None:
        self.holder = holder
        self.sources = sources or DashboardSources()
        self.clock = clock
        self.history = History(lambda: read_samples(holder.metrics, FAMILIES), self._sides,
                               interval_s=interval_s, clock=clock)

    async def run(self) -> None:
        """Keep the history; runs beside the admin listener for as long as it serves."""
        await self.history.run()

    def _sides(self) -> Sides | None:
        runtime = self.holder.runtime
        if runtime is None:
            return None
        config = runtime.config
        return {route.name: config.legacy_side(route) for route in config.routes}

    def read_sources(self) -> Sourced:
        """What ramps, roll back all and shadow traffic say now; on the event loop, where their state lives."""
        token_required = self.sources.token_required
        return Sourced(source.read(self.sources.ramps, "ramps"), source.read(self.sources.shadow, "shadow"),
                       bool(token_required and token_required()))

    def document(self, routes_document: dict[str, Any], since: int = 0,
                 sourced: Sourced | None = None) -> dict[str, Any]:
        """GET /dashboard.json: the state now, and the history's frames after `since` (all of them for 0).

        With `sourced` given (read on the event loop), any thread may build it: the history is read
        through snapshots that are replaced whole.
        """
        sourced = sourced or self.read_sources()
        ramps, shadow = sourced.ramps, sourced.shadow
        sides = self._sides() or {}
        latest = self.history.latest
        ramp_of = source.ramps_by_route(ramps.document)
        shadow_of = source.shadow_by_route(shadow.document)
        routes, moved = [], 0
        for entry in routes_document["routes"]:
            name = entry["name"]
            legacy = sides.get(name)
            split = entry["split"]
            compose = entry.get("compose")
            if compose:
                # A composite route has no split: its parts' upstreams say how far it has moved.
                parts = [part["upstream"] for part in compose.values()]
                new_percent = 100.0 * sum(upstream != legacy for upstream in parts) / len(parts)
            else:
                new_percent = 100.0 - float(split.get(legacy, 0.0)) if legacy is not None else 100.0
            moved += new_percent >= 100.0
            figures = latest.routes.get(name) if latest else None
            routes.append({
                "name": name,
                "match": entry["match"],
                "split": split,
                "split_source": entry.get("split_source", "config"),
                "compose": compose and {name: part["upstream"] for name, part in compose.items()},
                "legacy": legacy,
                "new_percent": new_percent,
                "fallback": entry["fallback"],
                "breakers": {upstream: state["state"] for upstream, state in entry["breakers"].items()},
                "figures": figures and {key: value for key, value in figures.items() if key != "shadow"},
                "shadow": _shadow(name, figures, shadow_of.get(name)),
                "ramp": ramp_of.get(name),
            })
        return {
            "generated_at": self.clock(),
            "version": routes_document["version"],
            "loaded_at": routes_document["loaded_at"],
            "features": {
                "ramps": ramps.configured, "ramps_available": ramps.available,
                "shadow": any(route["shadow"] for route in routes),
                "shadow_available": shadow.available,
                # The page asks for the token before its first change when one is needed (and after a 401).
                "token_required": sourced.token_required,
            },
            "rollback_all": source.rollback_all(ramps.document),
            "progress": {
                **(latest.progress if latest else {"window_s": 0, "requests": 0, "new_share": None}),
                "routes": len(routes), "routes_moved": moved,
            },
            "routes": routes,
            "history": self._frames(since),
        }

    def _frames(self, since: int) -> dict[str, Any]:
        history = self.history
        frames = history.frames_since(since)
        names = self._sides() or {}
        return {
            "interval_s": history.interval_s,
            "capacity": history.capacity,
            "seq": history.seq,
            # Where these frames start: a page whose last frame is just before it appends, any other replaces.
            "from_seq": frames[0].seq if frames else history.seq + 1,
            "at": [round(frame.at, 3) for frame in frames],
            "new_share": [frame.new_share for frame in frames],
            "routes": {name: {series: [frame.routes.get(name, _EMPTY)[index] for frame in frames]
                              for index, series in enumerate(SERIES)} for name in names},
        }


_EMPTY = (None,) * len(SERIES)


@dataclass(frozen=True, slots=True)
class Sourced:
    ramps: source.Found
    shadow: source.Found
    token_required: bool


def _shadow(route: str, figures: dict[str, Any] | None, listed: dict[str, Any] | None) -> dict[str, Any] | None:
    """The match rate from the shadow counters (its metrics); the fields that differ from GET /shadow."""
    counted = (figures or {}).get("shadow")
    if counted is None and listed is None:
        return None
    counted, listed = counted or {}, listed or {}
    match_rate = counted.get("match_rate")
    return {
        "upstream": listed.get("shadow") or ", ".join(counted.get("upstreams", ())) or None,
        "match_rate": match_rate if match_rate is not None else listed.get("match_rate"),
        "counts": counted.get("counts", {}),
        "window_s": counted.get("window_s"),
        "top_fields": listed.get("top_fields", []),
        "samples": f"shadow/{quote(route, safe='')}/samples",
    }

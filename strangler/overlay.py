"""Shares in force that differ from the config: ramp steps and roll back all, laid over the routes' splits.

The control plane decides them; the runtime applies them when it is built, as a
reload does, so a split table is only ever swapped whole and stickiness holds.
An overlay never outlives what it was decided for: a ramp's shares apply only to
the ramp block they were decided for (its id), and only to a split that names the
same upstreams. Roll back all applies to every route whose split names the legacy
upstream, whatever the config says now.

With `--workers`, the parent writes the overlay to `shares.json` in the state
directory and each worker applies it (see reload.py); `encode` and `decode` are
that file's format, which a controller in a process of its own also serves to
its instances (control/feed.py), under its `revision`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from .config.model import Route

Split = tuple[tuple[str, float], ...]
SHARES_FILE = "shares.json"
_FORMAT = "strangler.shares"
_VERSION = 1


@dataclass(frozen=True, slots=True)
class RampShares:
    ramp_id: str          # the ramp block these shares were decided for
    split: Split


@dataclass(frozen=True, slots=True, kw_only=True)
class Overlay:
    ramps: Mapping[str, RampShares] = field(default_factory=dict)     # by route name
    rollback_all_to: str | None = None                              # the legacy upstream, while roll back all holds

    def split_for(self, route: Route) -> Split:
        """The route's split in force under this overlay, in the order the config lists it."""
        names = [name for name, _ in route.split]
        legacy = self.rollback_all_to
        if legacy is not None and legacy in names:
            return tuple((name, 100.0 if name == legacy else 0.0) for name in names)
        shares = self.ramps.get(route.name)
        if shares is None or route.ramp is None or shares.ramp_id != route.ramp.id:
            return route.split
        percents = dict(shares.split)
        if set(percents) != set(names):
            return route.split
        return tuple((name, percents[name]) for name in names)

    def source_for(self, route: Route) -> str:
        """Who sets the route's split now: "config", "ramp" or "rollback_all"."""
        if self.rollback_all_to is not None and self.rollback_all_to in (name for name, _ in route.split):
            return "rollback_all"
        return "ramp" if self.split_for(route) != route.split else "config"


EMPTY = Overlay()


def encode(overlay: Overlay) -> bytes:
    return json.dumps({
        "format": _FORMAT, "version": _VERSION, "rollback_all_to": overlay.rollback_all_to,
        "ramps": {route: {"ramp_id": shares.ramp_id, "split": [list(share) for share in shares.split]}
                  for route, shares in overlay.ramps.items()},
    }, indent=1, sort_keys=True).encode()


def revision(overlay: Overlay) -> str:
    """Names these shares: the same overlay has the same revision in every process."""
    return hashlib.sha256(encode(overlay)).hexdigest()[:16]


def decode(data: bytes) -> Overlay:
    """The overlay in a shares file; ValueError saying what is wrong with it."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"not JSON: {error}") from None
    return from_document(document)


def from_document(document: object) -> Overlay:
    """The overlay in a parsed shares document (a file's, or a controller's answer); ValueError if it is not one."""
    if not isinstance(document, dict) or document.get("format") != _FORMAT:
        raise ValueError(f"not a {_FORMAT} file")
    if document.get("version") != _VERSION:
        raise ValueError(f"version {document.get('version')!r}, this proxy reads {_VERSION}")
    legacy = document.get("rollback_all_to")
    ramps = document.get("ramps")
    if (legacy is not None and not isinstance(legacy, str)) or not isinstance(ramps, dict):
        raise ValueError("rollback_all_to or ramps has the wrong type")
    found: dict[str, RampShares] = {}
    for route, entry in ramps.items():
        try:
            split = tuple((str(name), float(percent)) for name, percent in entry["split"])
            found[route] = RampShares(str(entry["ramp_id"]), split)
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"ramps.{route}: expected ramp_id and split [[upstream, percent], ...]") from None
    return Overlay(ramps=found, rollback_all_to=legacy)

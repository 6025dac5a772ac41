"""One ramp's progress: its state, the share of `to` it stands at, its window, and what it decided.

Plain data that the controller changes and the state file keeps; `to_dict` and
`from_dict` are the file's form of it (from_dict raises ValueError on anything
that is not what to_dict writes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..config.model import Ramp

STATES = ("running", "held", "paused", "rolled_back", "done")
EVALUATED = ("running", "held")          # the states whose windows are judged
LAST_DECISIONS = 20
HISTORY = 100


@dataclass(slots=True, kw_only=True)
class RampProgress:
    route: str
    ramp_id: str
    state: str
    percent: float                       # the share of `to` this ramp puts in force
    window_started_at: float             # wall clock; the window's age survives a restart
    next_due_at: float
    decisions: list[dict[str, Any]] = field(default_factory=list)   # evaluations and operator actions, oldest first
    history: list[dict[str, Any]] = field(default_factory=list)     # changes of state or share, oldest first

    def new_window(self, now: float, ramp: Ramp) -> None:
        self.window_started_at = now
        self.next_due_at = now + ramp.every_s

    def record(self, entry: dict[str, Any], changed: bool) -> None:
        self.decisions = [*self.decisions[-(LAST_DECISIONS - 1):], entry]
        if changed:
            self.history = [*self.history[-(HISTORY - 1):], entry]

    def to_dict(self) -> dict[str, Any]:
        return {"ramp_id": self.ramp_id, "state": self.state, "percent": self.percent,
                "window_started_at": self.window_started_at, "next_due_at": self.next_due_at,
                "decisions": self.decisions, "history": self.history}

    @classmethod
    def from_dict(cls, route: str, data: Any) -> RampProgress:
        if not isinstance(data, dict):
            raise ValueError(f"ramps.{route}: expected an object")
        state = data.get("state")
        if state not in STATES:
            raise ValueError(f"ramps.{route}.state: expected one of {', '.join(STATES)}, found {state!r}")
        numbers = {}
        for key in ("percent", "window_started_at", "next_due_at"):
            value = data.get(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"ramps.{route}.{key}: expected a number, found {value!r}")
            numbers[key] = float(value)
        if not 0 <= numbers["percent"] <= 100:
            raise ValueError(f"ramps.{route}.percent: expected 0 to 100, found {numbers['percent']}")
        lists = {}
        for key in ("decisions", "history"):
            value = data.get(key, [])
            if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
                raise ValueError(f"ramps.{route}.{key}: expected a list of objects")
            lists[key] = value
        ramp_id = data.get("ramp_id")
        if not isinstance(ramp_id, str):
            raise ValueError(f"ramps.{route}.ramp_id: expected a string")
        return cls(route=route, ramp_id=ramp_id, state=state, **numbers, **lists)


def next_step(ramp: Ramp, percent: float) -> float | None:
    """The first step above `percent`; None at (or past) the last."""
    return next((step for step in ramp.steps if step > percent), None)


def step_index(ramp: Ramp, percent: float) -> int | None:
    """Which step `percent` is (0-based); None between steps or before the first."""
    return next((index for index, step in enumerate(ramp.steps) if step == percent), None)

"""What the controller shows: one log line per decision or event, the ramp metrics, and GET /ramps' documents."""

from __future__ import annotations

import datetime
import logging
from typing import Any

from ..config.model import Route
from ..metrics import ControlMetrics
from ..overlay import Overlay
from .gates import thresholds
from .ramp import EVALUATED, STATES, RampProgress, next_step, step_index

log = logging.getLogger("strangler.control")


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).isoformat(timespec="milliseconds")


def _pairs(values: dict[str, Any]) -> str:
    return ",".join(f"{key}:{_short(key, value)}" for key, value in values.items())


def _short(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "p95_s":
        return f"{value * 1000:.1f}ms"
    if key.endswith("percent") or key in ("max_error_rate", "max_error_rate_increase", "min_shadow_match"):
        return f"{value:g}%"
    return f"{value:g}" if isinstance(value, float) else str(value)


def log_entry(route: str, entry: dict[str, Any]) -> None:
    """`ramp.decision route=... decision=... gate=... ...` with the figures, thresholds and window; or an event."""
    if "decision" in entry:
        figures = entry.get("figures") or {}
        sides = " ".join(f"{side}={_pairs(figures[side])}" for side in ("to", "legacy", "shadow") if side in figures)
        level = logging.WARNING if entry["decision"] in ("rollback", "hold") else logging.INFO
        log.log(level, "ramp.decision route=%s decision=%s gate=%s percent=%g->%g state=%s by=%s window=%.1fs "
                "reason=%r %sthresholds=%s", route, entry["decision"], entry["gate"], entry["from_percent"],
                entry["percent"], entry["state"], entry["by"], entry["window"]["seconds"], entry["reason"],
                f"{sides} " if sides else "", _pairs(entry.get("thresholds") or {}))
    else:
        log.info("ramp.%s route=%s percent=%g state=%s by=%s reason=%r", entry["event"], route, entry["percent"],
                 entry["state"], entry["by"], entry["reason"])


def shown_state(progress: RampProgress, frozen: bool) -> str:
    """The state users see: a ramp that roll back all froze shows as paused."""
    return "paused" if frozen and progress.state in EVALUATED else progress.state


class Reporter:
    """Keeps the ramp gauges in step with the controller, retiring those of ramps that went away."""

    def __init__(self, metrics: ControlMetrics) -> None:
        self.metrics = metrics
        self._shown: dict[str, set[str]] = {}     # route -> upstreams with a ramp_percent sample

    def publish(self, routes: dict[str, tuple[Route, RampProgress]], overlay: Overlay) -> None:
        metrics = self.metrics
        for name in list(self._shown):
            if name not in routes:
                for upstream in self._shown.pop(name):
                    metrics.retire(metrics.ramp_percent, name, upstream)
                for state in STATES:
                    metrics.retire(metrics.ramp_state, name, state)
        frozen = overlay.rollback_all_to is not None
        for name, (route, progress) in routes.items():
            shares = overlay.split_for(route)
            for upstream in self._shown.get(name, set()) - {upstream for upstream, _ in shares}:
                metrics.retire(metrics.ramp_percent, name, upstream)
            self._shown[name] = {upstream for upstream, _ in shares}
            for upstream, percent in shares:
                metrics.ramp_percent.labels(name, upstream).set(percent)
            current = shown_state(progress, frozen)
            for state in STATES:
                metrics.ramp_state.labels(name, state).set(1 if state == current else 0)
        metrics.rollback_all_active.set(1 if frozen else 0)


def ramp_document(route: Route, progress: RampProgress, overlay: Overlay) -> dict[str, Any]:
    ramp = route.ramp
    assert ramp is not None
    frozen = overlay.rollback_all_to is not None
    state = shown_state(progress, frozen)
    evaluated = state in EVALUATED
    return {
        "route": route.name,
        "to": ramp.to,
        "legacy": ramp.legacy,
        "state": state,
        "frozen_by_rollback_all": frozen and progress.state in EVALUATED,
        "percent": progress.percent,
        "split": dict(overlay.split_for(route)),
        "steps": list(ramp.steps),
        "step": step_index(ramp, progress.percent),
        "next_step": next_step(ramp, progress.percent) if state not in ("done", "rolled_back") else None,
        "every_s": ramp.every_s,
        "on_breach": ramp.on_breach,
        "gates": thresholds(ramp),
        "window_started_at": iso(progress.window_started_at) if evaluated else None,
        "next_evaluation_at": iso(progress.next_due_at) if evaluated else None,
        "last_decisions": [_shown_entry(entry) for entry in reversed(progress.decisions)],
        "history": [_shown_entry(entry) for entry in reversed(progress.history)],
    }


def _shown_entry(entry: dict[str, Any]) -> dict[str, Any]:
    shown = dict(entry)
    shown["at"] = iso(entry.get("at"))
    if isinstance(entry.get("window"), dict):
        shown["window"] = {**entry["window"], "started_at": iso(entry["window"].get("started_at"))}
    return shown

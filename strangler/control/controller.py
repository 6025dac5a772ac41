"""The controller: ramps moved step by step through their gates, operator actions, and roll back all.

It decides shares and hands them to `publish` as an Overlay, which the runtime
applies as a reload would; it never touches a request. It reads the running
config through `config_source` and its gates' figures through a GateFigures,
so the same controller can run beside the proxy or in a process of its own.
Every decision is logged, counted, kept in the ramp's record and persisted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config.model import Config, Route
from ..metrics import ControlMetrics
from ..overlay import Overlay, RampShares
from .figures import FiguresUnreadable, GateFigures
from .gates import Verdict, judge, thresholds
from .ramp import EVALUATED, RampProgress, next_step
from .report import Reporter, iso, log, log_entry, ramp_document
from .store import StateRefused, StateStore

RAMPS_FILE, RAMPS_KIND = "ramps.json", "strangler.ramps"
ROLLBACK_FILE, ROLLBACK_KIND = "rollback-all.json", "strangler.rollback_all"
TICK_S = 0.25
REFUSED_RECHECK_S = 2.0


class ControlError(Exception):
    """An operator request the controller cannot carry out; `status` is the HTTP status that says why."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail


@dataclass(slots=True, kw_only=True)
class RollbackAll:
    reason: str
    since: float
    legacy: str
    by: str
    refused_file: bool = False      # in force because its state file could not be read


class Controller:
    def __init__(self, config_source: Callable[[], Config | None], figures: GateFigures,
                 publish: Callable[[Overlay], None], metrics: ControlMetrics, store: StateStore, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.config_source = config_source
        self.figures = figures
        self.publish = publish
        self.metrics = metrics
        self.store = store
        self.clock = clock
        self.ramps: dict[str, RampProgress] = {}
        self.rollback: RollbackAll | None = None
        self.refused: str | None = None          # why the ramps file was refused; ramps then hold at the config
        self._config: Config | None = None
        self._published: Overlay | None = None
        self._reporter = Reporter(metrics)
        self._refused_signature: tuple[int, int, int] | None = None
        self._refused_checked = 0.0

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Load the state directory and put its shares in force; call before serving."""
        try:
            self._start()
        except Exception:
            log.exception("controller.error at start; the config's shares stay in force")
            self.metrics.controller_errors.inc()

    def _start(self) -> None:
        self._load_rollback()
        self._load_ramps()
        loaded = {name: progress.ramp_id for name, progress in self.ramps.items()}
        config = self.config_source()
        if config is not None:
            self._sync(config)
        now = self.clock()
        for name, progress in self.ramps.items():
            if loaded.get(name) == progress.ramp_id:
                log.info("ramp.resumed route=%s state=%s percent=%g window_age=%.1fs next_evaluation=%s", name,
                         progress.state, progress.percent, now - progress.window_started_at, iso(progress.next_due_at))
        self._publish()

    async def run(self, interval_s: float = TICK_S) -> None:
        """Tick forever; an exception is logged and counted, and the shares in force stay as they are."""
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("controller.error")
                self.metrics.controller_errors.inc()
            await asyncio.sleep(interval_s)

    async def tick(self) -> None:
        config = self.config_source()
        if config is not None and config is not self._config:
            self._sync(config)
        if self.refused is not None:
            self._recheck_refused()
        if self.rollback is not None or self.refused is not None or self._config is None:
            return
        for name, progress in list(self.ramps.items()):
            route = self._route(name)
            if progress.state in EVALUATED and self.clock() >= progress.next_due_at:
                try:
                    await self._evaluate(progress, route)
                except Exception:
                    log.exception("controller.error route=%s", name)
                    self.metrics.controller_errors.inc()

    # -- ramps --------------------------------------------------------------------------------

    def _sync(self, config: Config) -> None:
        """Follow the running config: new ramps start, edited ones start anew, removed ones go."""
        self._config = config
        wanted = {route.name: route for route in config.routes if route.ramp is not None}
        changed = False
        for name in [name for name in self.ramps if name not in wanted]:
            del self.ramps[name]
            log.info("ramp.removed route=%s", name)
            changed = True
        for name, route in wanted.items():
            found = self.ramps.get(name)
            if found is None or found.ramp_id != route.ramp.id:  # type: ignore[union-attr]
                self.ramps[name] = self._begin(route, "new ramp" if found is None else "ramp block or split changed")
                changed = True
        if changed:
            self._save_ramps()
        self._publish()

    def _begin(self, route: Route, why: str) -> RampProgress:
        ramp = route.ramp
        assert ramp is not None
        now = self.clock()
        percent = dict(route.split)[ramp.to]
        progress = RampProgress(route=route.name, ramp_id=ramp.id, state="running", percent=percent,
                                window_started_at=now, next_due_at=now + ramp.every_s)
        if self.refused is not None:
            self._event(progress, "held", f"state file refused: {self.refused}", state="held")
            return progress
        self.figures.begin_window(route.name, now)
        self._event(progress, "started", why)
        if percent >= ramp.steps[-1]:
            self._event(progress, "done", "the split already gives `to` the last step", state="done")
        elif percent < ramp.steps[0]:
            decision = "done" if len(ramp.steps) == 1 else "advance"
            self._decide(progress, route, decision, "none", "the ramp starts at its first step", percent=ramp.steps[0],
                         state="done" if decision == "done" else "running")
        return progress

    async def _evaluate(self, progress: RampProgress, route: Route) -> None:
        ramp = route.ramp
        assert ramp is not None
        started, now = progress.window_started_at, self.clock()
        unreadable = ""
        try:
            window = await self.figures.read_window(route.name, started, now)
        except FiguresUnreadable as error:
            log.warning("figures.unreadable route=%s reason=%s", route.name, error)
            window, unreadable = None, str(error)
        except Exception:
            log.exception("figures.unreadable route=%s", route.name)
            window = None
        if (self.ramps.get(route.name) is not progress or progress.window_started_at != started
                or progress.state not in EVALUATED or self.rollback is not None or self.refused is not None):
            return      # an operator or a reload changed the ramp while its figures were read
        verdict = judge(ramp, window)
        if unreadable:
            verdict = Verdict(verdict.outcome, verdict.gate, f"{verdict.reason}: {unreadable}", verdict.figures)

        def decide(decision: str, **change: Any) -> None:
            self._decide(progress, route, decision, verdict.gate, verdict.reason, figures=verdict.figures, now=now,
                         **change)

        if verdict.outcome == "inconclusive":
            decide("inconclusive")
            progress.next_due_at = now + ramp.every_s       # the window grows until it has enough
        elif verdict.outcome == "breach" and ramp.on_breach == "rollback":
            decide("rollback", percent=0.0, state="rolled_back")
        elif verdict.outcome == "breach":
            decide("hold", state="held")
            self._new_window(progress, ramp, now)
        else:
            step = next_step(ramp, progress.percent)
            if step is None or step == ramp.steps[-1]:
                decide("done", percent=step if step is not None else progress.percent, state="done")
            else:
                decide("advance", percent=step, state="running")
                self._new_window(progress, ramp, now)
        self._save_ramps()
        self._publish()

    def _new_window(self, progress: RampProgress, ramp: Any, now: float) -> None:
        progress.new_window(now, ramp)
        self.figures.begin_window(progress.route, now)

    def _decide(self, progress: RampProgress, route: Route, decision: str, gate: str, reason: str, *,
                percent: float | None = None, state: str | None = None, figures: dict[str, Any] | None = None,
                by: str = "controller", now: float | None = None) -> None:
        now = self.clock() if now is None else now
        before = (progress.percent, progress.state)
        progress.percent = before[0] if percent is None else percent
        progress.state = before[1] if state is None else state
        entry = {"at": now, "decision": decision, "gate": gate, "reason": reason, "from_percent": before[0],
                 "percent": progress.percent, "state": progress.state, "by": by,
                 "window": {"started_at": progress.window_started_at,
                            "seconds": round(max(0.0, now - progress.window_started_at), 3)},
                 "figures": figures or {}, "thresholds": thresholds(route.ramp)}  # type: ignore[arg-type]
        progress.record(entry, changed=(progress.percent, progress.state) != before)
        self.metrics.ramp_decisions.labels(route.name, decision, gate).inc()
        log_entry(route.name, entry)

    def _event(self, progress: RampProgress, event: str, reason: str, *, state: str | None = None,
               by: str = "controller") -> None:
        progress.state = progress.state if state is None else state
        entry = {"at": self.clock(), "event": event, "reason": reason, "percent": progress.percent,
                 "state": progress.state, "by": by}
        progress.history = [*progress.history[-99:], entry]
        log_entry(progress.route, entry)

    # -- operator actions ---------------------------------------------------------------------

    def act(self, name: str, action: str, reason: str, by: str) -> dict[str, Any]:
        """pause, resume, promote or rollback one ramp; the ramp's document after it."""
        progress = self.ramps.get(name)
        if progress is None:
            known = ", ".join(sorted(self.ramps)) or "none"
            raise ControlError(404, "No such ramp", f"no route named {name!r} has a ramp (ramps: {known})")
        if self.refused is not None:
            raise ControlError(409, "Ramp state refused", f"ramps hold where the config puts them: {self.refused}; "
                               "move the file away to start the ramps afresh")
        if self.rollback is not None and action in ("resume", "promote"):
            raise ControlError(409, "Roll back all is active", "lift it first: POST /rollback-all/lift")
        route = self._route(name)
        ramp = route.ramp
        assert ramp is not None
        now, state = self.clock(), progress.state
        why = reason or f"{action} by an operator"
        if action == "pause" and state in EVALUATED:
            self._event(progress, "paused", why, state="paused", by=by)
        elif action == "resume" and state in ("paused", "held"):
            self._event(progress, "resumed", why, state="running", by=by)
            self._new_window(progress, ramp, now)
        elif action == "resume" and state == "rolled_back":
            start = dict(route.split)[ramp.to]
            self._event(progress, "resumed", why, by=by)
            self._decide(progress, route, "advance", "operator", why, percent=max(start, ramp.steps[0]),
                         state="running", by=by)
            self._new_window(progress, ramp, now)
        elif action == "promote" and state not in ("rolled_back", "done"):
            step = next_step(ramp, progress.percent)
            last = step is None or step == ramp.steps[-1]
            self._decide(progress, route, "done" if last else "advance", "operator", why,
                         percent=step if step is not None else progress.percent,
                         state="done" if last else ("paused" if state == "paused" else "running"), by=by)
            self._new_window(progress, ramp, now)
        elif action == "rollback" and state != "rolled_back":
            self._decide(progress, route, "rollback", "operator", why, percent=0.0, state="rolled_back", by=by)
        elif not (action == state_word(state)):
            raise ControlError(409, "Not possible now", f"cannot {action} the ramp of {name!r}: it is {state}")
        self._save_ramps()
        self._publish()
        return self.ramp_document(name)

    # -- roll back all ------------------------------------------------------------------------

    def rollback_all(self, reason: str, by: str) -> dict[str, Any]:
        if self.rollback is not None:
            log.info("rollback_all.repeated by=%s reason=%r (already active since %s)", by, reason,
                     iso(self.rollback.since))
            return {**self.rollback_document(), "already_active": True}
        config = self._config or self.config_source()
        legacy = config.legacy if config is not None else None
        if legacy is None:
            raise ControlError(409, "No legacy upstream", "no upstream says role: legacy, so there is nowhere to "
                               "roll back to")
        self.rollback = RollbackAll(reason=reason, since=self.clock(), legacy=legacy, by=by)
        self._publish()                              # the shares move first; the record follows
        document = self.rollback_document()
        log.warning("rollback_all.started by=%s reason=%r legacy=%s routes=%s left=%s", by, reason, legacy,
                    ",".join(document["routes"]) or "-", ",".join(document["left"]) or "-")
        document["persisted"] = self._save_rollback()
        for progress in self.ramps.values():
            if progress.state in EVALUATED:
                self._event(progress, "frozen", f"roll back all: {reason}", by=by)
        self._save_ramps()
        return {**document, "already_active": False}

    def lift(self, reason: str, by: str) -> dict[str, Any]:
        if self.rollback is None:
            return {**self.rollback_document(), "already_lifted": True}
        if self.rollback.refused_file:
            try:
                aside = self.store.set_aside(ROLLBACK_FILE)
                log.warning("state.set_aside file=%s to=%s by=%s", self.store.path(ROLLBACK_FILE), aside, by)
            except OSError as error:
                log.warning("state.set_aside file=%s error=%s", self.store.path(ROLLBACK_FILE), error)
        since, self.rollback = self.rollback.since, None
        now = self.clock()
        for name, progress in self.ramps.items():
            if progress.state in EVALUATED:       # their windows start again: the frozen time does not count
                self._event(progress, "thawed", reason or "roll back all lifted", by=by)
                self._new_window(progress, self._route(name).ramp, now)
        self._publish()
        log.warning("rollback_all.lifted by=%s reason=%r active_for=%.1fs", by, reason, now - since)
        persisted = self._save_rollback()
        persisted = self._save_ramps() and persisted
        return {**self.rollback_document(), "already_lifted": False, "persisted": persisted}

    # -- documents ----------------------------------------------------------------------------

    def document(self) -> dict[str, Any]:
        """GET /ramps."""
        ramps = [self.ramp_document(name) for name in self.ramps]
        describe = getattr(self.figures, "describe", None)
        if describe is not None:
            # Where each ramp's next figures come from, and how they are read (a controller on Prometheus: the PromQL).
            for document in ramps:
                progress = self.ramps[document["route"]]
                document["figures_source"] = describe(document["route"], progress.window_started_at, self.clock())
        return {"rollback_all": self.rollback_document(), "state_dir": str(self.store.directory),
                "state": "refused: " + self.refused if self.refused else "ok", "ramps": ramps}

    def ramp_document(self, name: str) -> dict[str, Any]:
        return ramp_document(self._route(name), self.ramps[name], self._overlay())

    def rollback_document(self) -> dict[str, Any]:
        if self.rollback is None:
            return {"active": False, "routes": [], "left": {}}
        config = self._config
        routes, left = [], {}
        for route in config.routes if config else ():
            if self.rollback.legacy in (name for name, _ in route.split):
                routes.append(route.name)
            else:
                left[route.name] = f"its split does not name {self.rollback.legacy}"
        return {"active": True, "reason": self.rollback.reason, "since": iso(self.rollback.since),
                "by": self.rollback.by, "legacy": self.rollback.legacy, "routes": routes, "left": left}

    # -- shares and state ---------------------------------------------------------------------

    def _route(self, name: str) -> Route:
        assert self._config is not None
        return next(route for route in self._config.routes if route.name == name)

    def _overlay(self) -> Overlay:
        ramps = {}
        if self._config is not None and self.refused is None:
            for route in self._config.routes:
                progress = self.ramps.get(route.name)
                if route.ramp is not None and progress is not None and progress.ramp_id == route.ramp.id:
                    ramps[route.name] = RampShares(progress.ramp_id, route.ramp.shares(route.split, progress.percent))
        return Overlay(ramps=ramps, rollback_all_to=self.rollback.legacy if self.rollback else None)

    def _publish(self) -> None:
        overlay = self._overlay()
        if overlay != self._published:
            self.publish(overlay)
            self._published = overlay
        if self._config is not None:
            routes = {name: (self._route(name), progress) for name, progress in self.ramps.items()}
            self._reporter.publish(routes, overlay)

    def _save_ramps(self) -> bool:
        if self.refused is not None:
            return False        # never over a file that was refused
        return self._write(RAMPS_FILE, RAMPS_KIND,
                           {"ramps": {name: progress.to_dict() for name, progress in self.ramps.items()}})

    def _save_rollback(self) -> bool:
        rollback = self.rollback
        body: dict[str, Any] = {"active": rollback is not None}
        if rollback is not None:
            body.update(reason=rollback.reason, since=rollback.since, legacy=rollback.legacy, by=rollback.by)
        return self._write(ROLLBACK_FILE, ROLLBACK_KIND, body)

    def _write(self, name: str, kind: str, body: dict[str, Any]) -> bool:
        try:
            self.store.write(name, kind, body)
            return True
        except OSError as error:
            log.error("state.unwritable file=%s error=%s", self.store.path(name), error)
            self.metrics.controller_errors.inc()
            return False

    def _load_ramps(self) -> None:
        try:
            document = self.store.read(RAMPS_FILE, RAMPS_KIND)
            found = document.get("ramps", {}) if document else {}
            if not isinstance(found, dict):
                raise StateRefused(self.store.path(RAMPS_FILE), "corrupt: ramps is not an object")
            try:
                self.ramps = {name: RampProgress.from_dict(name, data) for name, data in found.items()}
            except ValueError as error:
                raise StateRefused(self.store.path(RAMPS_FILE), f"corrupt: {error}") from None
        except StateRefused as refused:
            self.refused = refused.reason
            self.ramps = {}
            self._refused_signature = self.store.signature(RAMPS_FILE)
            log.error("state.refused file=%s reason=%s; ramps hold where the config puts them and the file is kept "
                      "as it is (move it away to start the ramps afresh)", refused.path, refused.reason)

    def _recheck_refused(self) -> None:
        """A refused ramps file that an operator moved away or replaced is read again."""
        now = self.clock()
        if now - self._refused_checked < REFUSED_RECHECK_S:
            return
        self._refused_checked = now
        if self.store.signature(RAMPS_FILE) == self._refused_signature:
            return
        self.refused = None
        self._load_ramps()
        if self.refused is None:
            log.info("state.accepted file=%s", self.store.path(RAMPS_FILE))
            self._config = None         # the next tick resumes or starts every ramp from what was read

    def _load_rollback(self) -> None:
        path = self.store.path(ROLLBACK_FILE)
        try:
            document = self.store.read(ROLLBACK_FILE, ROLLBACK_KIND)
            if not document or document.get("active") is False:
                return
            fields = (document.get("reason"), document.get("legacy"), document.get("by"))
            since = document.get("since")
            if document.get("active") is not True or not all(isinstance(f, str) for f in fields) \
                    or isinstance(since, bool) or not isinstance(since, (int, float)):
                raise StateRefused(path, "corrupt: expected active, reason, since, legacy and by")
            self.rollback = RollbackAll(reason=fields[0], since=float(since), legacy=fields[1], by=fields[2])
            log.warning("rollback_all.resumed reason=%r since=%s legacy=%s", fields[0], iso(since), fields[1])
        except StateRefused as refused:
            # It may have said "active": the safe reading is that it did, until an operator lifts it.
            config = self.config_source()
            legacy = config.legacy if config is not None else None
            log.error("state.refused file=%s reason=%s; roll back all is kept in force (%s) until lifted, and the "
                      "file is kept as it is", path, refused.reason, legacy or "no legacy upstream to roll back to")
            if legacy is not None:
                self.rollback = RollbackAll(reason=f"state file refused: {refused.reason}", since=self.clock(),
                                            legacy=legacy, by="state", refused_file=True)


def state_word(state: str) -> str:
    """The action whose repetition is harmless in `state` (pausing a paused ramp, resuming a running one)."""
    return {"paused": "pause", "running": "resume", "rolled_back": "rollback"}.get(state, "")

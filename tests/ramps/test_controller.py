"""The ramp controller on an injected clock and injected figures: every decision, operator action and state file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from strangler.config.loader import parse_config
from strangler.config.model import Config
from strangler.control.controller import RAMPS_FILE, ROLLBACK_FILE, ControlError, Controller
from strangler.control.store import StateStore
from strangler.metrics import ControlMetrics
from strangler.overlay import Overlay
from tests.support.ramps import START, Clock, Figures, config_text, healthy

class Rig:
    """A controller with its clock, figures, state directory, metrics and the overlays it published."""

    def __init__(self, state_dir: Path, text: str | None = None) -> None:
        self.state_dir = state_dir
        self.config: Config | None = parse_config(text or config_text())
        self.clock = Clock()
        self.figures = Figures()
        self.published: list[Overlay] = []
        self.registry = CollectorRegistry()
        self.metrics = ControlMetrics(self.registry)
        self.controller = self.restart()

    def restart(self) -> Controller:
        """A new controller on the same state directory, as after a restart of the process."""
        self.controller = Controller(lambda: self.config, self.figures, self.published.append, self.metrics,
                                     StateStore(self.state_dir), clock=self.clock)
        self.controller.start()
        return self.controller

    async def after(self, seconds: float) -> None:
        self.clock.now += seconds
        await self.controller.tick()

    def ramp(self, route: str = "orders-read") -> dict:
        return next(r for r in self.controller.document()["ramps"] if r["route"] == route)

    def split(self, route: str = "orders-read") -> dict[str, float]:
        assert self.config is not None
        found = next(r for r in self.config.routes if r.name == route)
        return dict(self.published[-1].split_for(found))

    def decisions(self, decision: str, gate: str, route: str = "orders-read") -> float:
        return self.registry.get_sample_value("strangler_ramp_decisions_total",
                                              {"route": route, "decision": decision, "gate": gate}) or 0.0

    def gauge(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path / "state")


# -- the schedule and the gates -----------------------------------------------------------------

async def test_a_window_where_every_gate_holds_advances_to_the_next_step(rig: Rig) -> None:
    """Nothing happens before `every`; then a clean window moves `to` from 5% to 25% and starts a new window."""
    assert rig.split() == {"orders": 5, "legacy": 95}
    await rig.after(59)
    assert rig.figures.asked == [] and rig.ramp()["percent"] == 5
    await rig.after(1)
    ramp = rig.ramp()
    assert (ramp["percent"], ramp["state"], ramp["step"]) == (25, "running", 1)
    assert rig.split() == {"orders": 25, "legacy": 75}
    assert rig.figures.asked == [("orders-read", START, START + 60)]
    assert rig.figures.begun[-1] == ("orders-read", START + 60)
    assert ramp["last_decisions"][0]["decision"] == "advance" and ramp["last_decisions"][0]["gate"] == "none"
    assert ramp["last_decisions"][0]["figures"]["to"]["requests"] == 500
    assert ramp["next_evaluation_at"].startswith("2027-01-15T08:02:00")
    assert rig.decisions("advance", "none") == 1
    assert rig.gauge("strangler_ramp_percent", route="orders-read", upstream="orders") == 25
    assert rig.gauge("strangler_ramp_state", route="orders-read", state="running") == 1


async def test_too_little_traffic_is_inconclusive_and_the_window_grows_until_it_has_enough(rig: Rig) -> None:
    """Three requests a window never roll back nor advance; the window keeps its start, so data adds up."""
    rig.figures.window = healthy(to_requests=3, to_errors=3)
    for _ in range(3):
        await rig.after(60)
    ramp = rig.ramp()
    assert (ramp["percent"], ramp["state"]) == (5, "running")
    assert [asked[1] for asked in rig.figures.asked] == [START, START, START]      # one window, growing
    assert rig.decisions("inconclusive", "min_requests") == 3
    assert "3 request(s) for orders in the window, fewer than 100" in ramp["last_decisions"][0]["reason"]
    rig.figures.window = healthy(to_requests=120)
    await rig.after(60)
    assert rig.ramp()["percent"] == 25


@pytest.mark.parametrize("failure", [None, RuntimeError("prometheus is away")])
async def test_figures_that_cannot_be_read_are_inconclusive_never_a_breach(rig: Rig, failure) -> None:
    rig.figures.window = failure
    await rig.after(60)
    assert (rig.ramp()["percent"], rig.ramp()["state"]) == (5, "running")
    assert rig.decisions("inconclusive", "none") == 1


@pytest.mark.parametrize("changes, gate", [
    ({"to_errors": 10}, "max_error_rate"),                                    # 2% over 1%
    ({"to_errors": 4, "legacy_errors": 0}, "max_error_rate_increase"),        # 0.8% vs 0%: 0.8 points over 0.5
    ({"to_p95_s": 0.080}, "max_p95_ratio"),                                   # 1.6x over 1.5x
    ({"to_breaker_opened": 1}, "circuit_breaker"),
    ({"to_diverted": 20}, "max_error_rate"),                                  # sent to the fallback: errors of `to`
])
async def test_a_breach_of_each_gate_rolls_the_route_back_to_legacy(rig: Rig, changes, gate) -> None:
    rig.figures.window = healthy(**changes)
    await rig.after(60)
    ramp = rig.ramp()
    assert (ramp["percent"], ramp["state"]) == (0, "rolled_back")
    assert rig.split() == {"orders": 0, "legacy": 100}
    assert ramp["last_decisions"][0]["gate"] == gate
    assert rig.decisions("rollback", gate) == 1
    assert rig.gauge("strangler_ramp_state", route="orders-read", state="rolled_back") == 1
    await rig.after(600)
    assert len(rig.figures.asked) == 1          # a rolled back ramp is not evaluated again


async def test_a_breaker_that_opened_is_a_breach_even_with_too_little_traffic(rig: Rig) -> None:
    rig.figures.window = healthy(to_requests=4, to_breaker_opened=1, to_diverted=3)
    await rig.after(60)
    assert rig.ramp()["state"] == "rolled_back" and rig.decisions("rollback", "circuit_breaker") == 1


async def test_a_breach_with_on_breach_hold_holds_the_step_then_a_clean_window_advances(tmp_path: Path) -> None:
    rig = Rig(tmp_path, config_text(on_breach="hold"))
    rig.figures.window = healthy(to_errors=50)
    await rig.after(60)
    ramp = rig.ramp()
    assert (ramp["percent"], ramp["state"]) == (5, "held") and rig.decisions("hold", "max_error_rate") == 1
    assert rig.figures.begun[-1] == ("orders-read", START + 60)       # a new window: the breach is behind it
    rig.figures.window = healthy()
    await rig.after(60)
    assert (rig.ramp()["percent"], rig.ramp()["state"]) == (25, "running")


async def test_reaching_the_last_step_is_done_and_evaluation_stops(rig: Rig) -> None:
    for _ in range(3):
        await rig.after(60)
    ramp = rig.ramp()
    assert (ramp["percent"], ramp["state"], ramp["next_evaluation_at"]) == (100, "done", None)
    assert rig.split() == {"orders": 100, "legacy": 0}
    assert rig.decisions("advance", "none") == 2 and rig.decisions("done", "none") == 1
    assert [entry["percent"] for entry in reversed(ramp["history"]) if "decision" in entry] == [25, 50, 100]
    await rig.after(600)
    assert len(rig.figures.asked) == 3


async def test_a_ramp_whose_split_gives_to_nothing_starts_at_its_first_step(tmp_path: Path) -> None:
    rig = Rig(tmp_path, config_text(split="{legacy: 100, orders: 0}"))
    assert rig.ramp()["percent"] == 5 and rig.split() == {"legacy": 95, "orders": 5}


# -- operator actions ---------------------------------------------------------------------------

async def test_pause_resume_promote_and_rollback(rig: Rig) -> None:
    controller = rig.controller
    assert controller.act("orders-read", "pause", "looking at a dashboard", "test")["state"] == "paused"
    await rig.after(600)
    assert rig.figures.asked == []                          # paused: not evaluated
    assert controller.act("orders-read", "pause", "", "test")["state"] == "paused"        # again: harmless
    promoted = controller.act("orders-read", "promote", "", "test")
    assert (promoted["percent"], promoted["state"]) == (25, "paused")
    assert rig.decisions("advance", "operator") == 1
    resumed = controller.act("orders-read", "resume", "", "test")
    assert resumed["state"] == "running" and rig.figures.begun[-1] == ("orders-read", rig.clock.now)
    back = controller.act("orders-read", "rollback", "customer complaints", "test")
    assert (back["percent"], back["state"]) == (0, "rolled_back") and rig.split() == {"orders": 0, "legacy": 100}
    assert back["history"][0]["reason"] == "customer complaints" and back["history"][0]["by"] == "test"
    with pytest.raises(ControlError) as refused:
        controller.act("orders-read", "promote", "", "test")
    assert refused.value.status == 409
    again = controller.act("orders-read", "resume", "fixed", "test")    # starts again from where the config puts it
    assert (again["percent"], again["state"]) == (5, "running")


async def test_promote_at_the_next_to_last_step_is_done(rig: Rig) -> None:
    rig.controller.act("orders-read", "promote", "", "t")
    rig.controller.act("orders-read", "promote", "", "t")
    done = rig.controller.act("orders-read", "promote", "", "t")
    assert (done["percent"], done["state"]) == (100, "done") and rig.decisions("done", "operator") == 1


def test_an_unknown_route_is_404(rig: Rig) -> None:
    with pytest.raises(ControlError) as unknown:
        rig.controller.act("pages", "pause", "", "test")       # a route, but without a ramp
    assert unknown.value.status == 404 and "ramps: orders-read" in unknown.value.detail


# -- state: restart, refusal --------------------------------------------------------------------

async def test_a_restart_resumes_each_ramp_at_its_step_and_keeps_its_window_age(rig: Rig) -> None:
    await rig.after(60)                 # 5 -> 25, the window starts at START + 60
    await rig.after(20)                 # 20 s into it
    rig.restart()
    ramp = rig.ramp()
    assert (ramp["percent"], ramp["state"]) == (25, "running") and rig.split() == {"orders": 25, "legacy": 75}
    rig.figures.asked.clear()
    await rig.after(39)
    assert rig.figures.asked == []      # not a new 60 s window: the old one's age counts
    await rig.after(1)
    assert rig.figures.asked == [("orders-read", START + 60, START + 120)]
    assert rig.ramp()["percent"] == 50


def test_state_files_are_versioned_json_written_whole(rig: Rig) -> None:
    document = json.loads((rig.state_dir / RAMPS_FILE).read_text())
    assert document["format"] == "strangler.ramps" and document["version"] == 1
    assert document["ramps"]["orders-read"]["percent"] == 5
    assert sorted(path.name for path in rig.state_dir.iterdir()) == [RAMPS_FILE]      # no temporary files left


@pytest.mark.parametrize("content, reason", [
    (b'{"format": "strangler.ramps", "version": 1, "ramps": {"orders-read": {"sta', "not JSON"),
    (b'{"format": "strangler.ramps", "version": 2, "ramps": {}}', "written by a newer strangler"),
    (b'{"format": "strangler.ramps", "version": 1, "ramps": {"orders-read": {"state": "flying"}}}', "corrupt"),
])
async def test_a_corrupt_or_newer_state_file_is_refused_and_kept_and_ramps_hold_at_the_config(
        rig: Rig, content: bytes, reason: str, caplog) -> None:
    await rig.after(60)                                     # 25% before the file goes bad
    path = rig.state_dir / RAMPS_FILE
    path.write_bytes(content)
    rig.restart()
    assert f"state.refused file={path} reason=" in caplog.text and reason in caplog.text
    ramp = rig.ramp()
    assert (ramp["state"], ramp["percent"]) == ("held", 5) and rig.split() == {"orders": 5, "legacy": 95}
    assert rig.controller.document()["state"].startswith("refused: ")
    await rig.after(600)
    assert path.read_bytes() == content                     # never overwritten, never reset
    with pytest.raises(ControlError) as refused:
        rig.controller.act("orders-read", "promote", "", "test")
    assert refused.value.status == 409
    path.unlink()                                           # the operator moves it away: the ramp starts afresh
    await rig.after(3)
    await rig.after(0)
    assert rig.ramp()["state"] == "running" and json.loads(path.read_text())["version"] == 1


# -- roll back all ------------------------------------------------------------------------------

async def test_rollback_all_sends_every_route_naming_legacy_back_freezes_ramps_and_lift_restores(rig: Rig) -> None:
    await rig.after(60)                                     # orders-read at 25%
    done = rig.controller.rollback_all("orders_service is down", "test")
    assert done["routes"] == ["orders-read", "pages"]
    assert done["left"] == {"inventory": "its split does not name legacy"}
    assert done["persisted"] is True and done["already_active"] is False
    overlay = rig.published[-1]
    assert rig.split() == {"orders": 0, "legacy": 100} and rig.split("pages") == {"inventory": 0, "legacy": 100}
    assert rig.split("inventory") == {"inventory": 100}
    assert rig.gauge("strangler_rollback_all_active") == 1
    assert rig.ramp()["state"] == "paused" and rig.ramp()["frozen_by_rollback_all"] is True
    again = rig.controller.rollback_all("second click", "test")
    assert again["already_active"] is True and again["reason"] == "orders_service is down"
    assert rig.published[-1] is overlay
    await rig.after(600)
    assert len(rig.figures.asked) == 1                     # frozen: no evaluation
    with pytest.raises(ControlError) as refused:
        rig.controller.act("orders-read", "resume", "", "test")
    assert refused.value.status == 409
    lifted = rig.controller.lift("fixed", "test")
    assert lifted["active"] is False and lifted["already_lifted"] is False
    assert rig.split() == {"orders": 25, "legacy": 75} and rig.split("pages") == {"inventory": 10, "legacy": 90}
    assert rig.ramp()["state"] == "running"
    assert rig.figures.begun[-1] == ("orders-read", rig.clock.now)       # the frozen time does not count
    assert rig.controller.lift("", "test")["already_lifted"] is True
    assert rig.gauge("strangler_rollback_all_active") == 0


async def test_rollback_all_survives_a_restart_until_lifted(rig: Rig) -> None:
    rig.controller.rollback_all("incident 42", "test")
    rig.restart()
    assert rig.published[-1].rollback_all_to == "legacy" and rig.split() == {"orders": 0, "legacy": 100}
    assert rig.controller.rollback_document()["reason"] == "incident 42"
    rig.controller.lift("over", "test")
    rig.restart()
    assert rig.published[-1].rollback_all_to is None


def test_an_unreadable_rollback_file_keeps_rollback_all_in_force_until_lifted(rig: Rig, caplog) -> None:
    path = rig.state_dir / ROLLBACK_FILE
    path.write_bytes(b"\x00garbage")
    rig.restart()
    assert "roll back all is kept in force" in caplog.text
    assert rig.split() == {"orders": 0, "legacy": 100}
    assert path.read_bytes() == b"\x00garbage"
    rig.controller.lift("checked: it was lifted", "test")
    assert rig.split() == {"orders": 5, "legacy": 95}
    assert [p.name.startswith(ROLLBACK_FILE + ".refused-") for p in rig.state_dir.iterdir()].count(True) == 1


def test_rollback_all_without_a_legacy_upstream_is_refused(tmp_path: Path) -> None:
    rig = Rig(tmp_path, "version: 1\nupstreams:\n  a: {url: 'http://127.0.0.1:1'}\nroutes:\n"
                        "  - {name: r, match: {path: /}, to: a}\n")
    with pytest.raises(ControlError) as refused:
        rig.controller.rollback_all("why", "test")
    assert refused.value.status == 409


# -- reloads ------------------------------------------------------------------------------------

async def test_a_reload_keeps_the_ramp_unless_its_block_or_split_changed(rig: Rig) -> None:
    await rig.after(60)
    rig.config = parse_config(config_text(extra_route="  - {name: more, match: {path: /more}, to: legacy}\n"))
    await rig.after(0)
    assert rig.ramp()["percent"] == 25                      # another route changed: the ramp goes on
    rig.config = parse_config(config_text(steps="[5, 20, 100]"))
    await rig.after(0)
    ramp = rig.ramp()
    assert (ramp["percent"], ramp["state"]) == (5, "running")            # its block changed: anew
    assert ramp["history"][0]["reason"] == "ramp block or split changed"


async def test_an_exception_in_the_controller_is_logged_and_counted_and_it_goes_on(rig: Rig, caplog) -> None:
    calls = []

    def broken() -> Config:
        calls.append(1)
        raise RuntimeError("boom")

    rig.controller.config_source = broken
    task = asyncio.create_task(rig.controller.run(interval_s=0.001))
    for _ in range(1000):
        if len(calls) >= 2:
            break
        await asyncio.sleep(0.001)
    task.cancel()
    assert len(calls) >= 2 and rig.registry.get_sample_value("strangler_controller_errors_total") >= 2
    assert "controller.error" in caplog.text

"""Gate figures read from Prometheus, against a fake of its HTTP API on loopback: what is asked, what is made of
the answers, and that no data, an unreachable or failing Prometheus and partial series are inconclusive."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from strangler.config.loader import parse_config
from strangler.control.controller import Controller
from strangler.control.figures import FiguresUnreadable
from strangler.control.prometheus import PrometheusFigures, queries
from strangler.control.store import StateStore
from strangler.metrics import ControlMetrics
from strangler.overlay import Overlay
from tests.support.fake_prometheus import FakePrometheus
from tests.support.ramps import START, Clock, config_text
from tests.support.servers import free_port

EVERY_S = 60


@pytest.fixture
def prometheus(start_upstream) -> tuple[FakePrometheus, str]:
    fake = FakePrometheus()
    return fake, start_upstream(fake).url


def healthy_answers(fake: FakePrometheus, **changes: dict[str, float]) -> None:
    """Every instance together: orders does as well as legacy (changes replace a kind's series)."""
    fake.answer("requests", "upstream", orders=499.6, legacy=5000.3)
    fake.answer("errors", "upstream", legacy=5.2)
    fake.answer("p95_s", "upstream", orders=0.050, legacy=0.048)
    for kind, values in changes.items():
        fake.answer(kind, "from_upstream" if kind == "diverted" else "upstream", **values)


class Rig:
    """A controller whose gates read the fake Prometheus, on an injected clock."""

    def __init__(self, state_dir: Path, url: str) -> None:
        self.config = parse_config(config_text())
        self.clock = Clock()
        self.figures = PrometheusFigures(url, scrape_interval_s=15, timeout_s=2)
        self.published: list[Overlay] = []
        self.registry = CollectorRegistry()
        self.controller = Controller(lambda: self.config, self.figures, self.published.append,
                                     ControlMetrics(self.registry), StateStore(state_dir), clock=self.clock)
        self.controller.start()

    async def window(self) -> dict:
        """Let one window pass; the ramp's document after its evaluation."""
        self.clock.now += EVERY_S
        await self.controller.tick()
        return next(ramp for ramp in self.controller.document()["ramps"] if ramp["route"] == "orders-read")


async def test_figures_add_up_every_instance_per_upstream_and_a_clean_window_advances(prometheus, tmp_path) -> None:
    fake, url = prometheus
    healthy_answers(fake)
    rig = Rig(tmp_path, url)
    ramp = await rig.window()
    assert (ramp["percent"], ramp["last_decisions"][0]["decision"]) == (25, "advance")
    figures = ramp["last_decisions"][0]["figures"]
    assert figures["to"]["requests"] == 500 and figures["legacy"] == {**figures["legacy"], "requests": 5000, "errors": 5}
    assert figures["to"]["p95_s"] == 0.05 and figures["window_s"] == EVERY_S
    asked = {query["query"] for query in fake.asked}
    assert asked == set(queries("orders-read", EVERY_S).values())
    assert {query["time"] for query in fake.asked} == {f"{START + EVERY_S:.3f}"}
    p95 = next(query for query in asked if query.startswith("histogram_quantile"))
    assert p95 == ('histogram_quantile(0.95, sum by (le, upstream) '
                   '(rate(strangler_request_duration_seconds_bucket{route="orders-read"}[60s])))')
    await rig.figures.close()


async def test_an_error_rate_over_the_gate_in_prometheus_s_figures_rolls_back(prometheus, tmp_path) -> None:
    fake, url = prometheus
    healthy_answers(fake, errors={"orders": 50, "legacy": 5})
    rig = Rig(tmp_path, url)
    ramp = await rig.window()
    assert (ramp["state"], ramp["history"][0]["gate"]) == ("rolled_back", "max_error_rate")
    await rig.figures.close()


async def test_no_data_is_inconclusive_and_says_so(prometheus, tmp_path) -> None:
    fake, url = prometheus                       # every query answers an empty vector
    rig = Rig(tmp_path, url)
    ramp = await rig.window()
    decision = ramp["last_decisions"][0]
    assert (ramp["state"], ramp["percent"], decision["decision"]) == ("running", 5, "inconclusive")
    assert "no data" in decision["reason"] and "orders-read" in decision["reason"]
    await rig.figures.close()


async def test_an_unreachable_prometheus_is_inconclusive_never_a_breach(tmp_path) -> None:
    rig = Rig(tmp_path, f"http://127.0.0.1:{free_port()}")
    for _ in range(3):
        ramp = await rig.window()
        assert (ramp["state"], ramp["last_decisions"][0]["decision"]) == ("running", "inconclusive")
    assert "unreachable" in ramp["last_decisions"][0]["reason"]
    assert rig.registry.get_sample_value("strangler_ramp_decisions_total",
                                         {"route": "orders-read", "decision": "rollback", "gate": "none"}) is None
    await rig.figures.close()


@pytest.mark.parametrize("failing", ["requests", "errors", "p95_s"])
async def test_a_query_that_prometheus_refuses_makes_the_whole_window_inconclusive(prometheus, tmp_path,
                                                                                    failing: str) -> None:
    fake, url = prometheus
    healthy_answers(fake, errors={"orders": 50})       # would be a breach, if it could be read
    fake.failing[failing] = (503, {"status": "error", "errorType": "unavailable", "error": "query queue full"})
    rig = Rig(tmp_path, url)
    ramp = await rig.window()
    assert (ramp["state"], ramp["last_decisions"][0]["decision"]) == ("running", "inconclusive")
    assert "answered 503: query queue full" in ramp["last_decisions"][0]["reason"]
    await rig.figures.close()


async def test_partial_series_leave_the_gates_that_need_them_inconclusive(prometheus, tmp_path) -> None:
    fake, url = prometheus
    # Only the new side's series: nothing of legacy's to compare with.
    fake.answer("requests", "upstream", orders=500)
    fake.answer("p95_s", "upstream", orders=0.05)
    rig = Rig(tmp_path, url)
    decision = (await rig.window())["last_decisions"][0]
    assert (decision["decision"], decision["gate"]) == ("inconclusive", "max_error_rate_increase")
    # Both sides' requests, but the histogram says NaN for legacy (no request finished in the range).
    healthy_answers(fake)
    fake.series["p95_s"] = [({"upstream": "orders"}, 0.05), ({"upstream": "legacy"}, math.nan)]
    decision = (await rig.window())["last_decisions"][0]
    assert (decision["decision"], decision["gate"]) == ("inconclusive", "max_p95_ratio")
    # Too few requests for `to` in the range.
    healthy_answers(fake, requests={"orders": 12, "legacy": 5000})
    decision = (await rig.window())["last_decisions"][0]
    assert (decision["decision"], decision["gate"]) == ("inconclusive", "min_requests")
    assert (await rig.window())["percent"] == 5
    await rig.figures.close()


async def test_a_window_shorter_than_4_scrape_intervals_is_read_over_4(prometheus) -> None:
    fake, url = prometheus
    healthy_answers(fake)
    figures = PrometheusFigures(url, scrape_interval_s=15)
    window = await figures.read_window("orders-read", START, START + 20)
    assert window.seconds == 60
    assert all("[60s]" in query["query"] for query in fake.asked)
    assert figures.range_s(START, START + 300.2) == 301
    await figures.close()


async def test_counts_take_increase_of_old_series_and_the_whole_of_series_born_in_the_window() -> None:
    """increase() misses a new series' first count (a status code first seen, an instance that started)."""
    found = queries('odd"route', 30)
    assert found["errors"] == (
        'sum by (upstream) ((increase(strangler_requests_total{route="odd\\"route",code=~"5.."}[30s]) and '
        'strangler_requests_total{route="odd\\"route",code=~"5.."} offset 30s) or '
        'strangler_requests_total{route="odd\\"route",code=~"5.."})')
    assert 'to="open"' in found["breaker_opened"] and "by (from_upstream)" in found["diverted"]


async def test_get_ramps_shows_the_promql_of_the_current_window(prometheus, tmp_path) -> None:
    fake, url = prometheus
    rig = Rig(tmp_path, url)
    rig.clock.now += 30
    shown = rig.controller.document()["ramps"][0]["figures_source"]
    assert shown["source"] == "prometheus" and shown["url"] == url and shown["range_s"] == 60
    assert shown["promql"] == queries("orders-read", 60)


async def test_no_data_raises_figures_unreadable_for_the_controller_to_say_why(prometheus) -> None:
    fake, url = prometheus
    figures = PrometheusFigures(url, scrape_interval_s=1)
    with pytest.raises(FiguresUnreadable, match="no strangler_requests_total for route 'orders-read' over the last 10s"):
        await figures.read_window("orders-read", START, START + 10)
    await figures.close()

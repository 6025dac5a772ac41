"""How a ramp's shares reach requests: the overlay through reloads, stickiness, the workers' file, and the figures."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from strangler import overlay as shares_file
from strangler.control.controller import Controller
from strangler.control.figures import quantile_from_buckets
from strangler.control.local import RegistryFigures
from strangler.control.store import StateStore, atomic_write
from strangler.metrics import Metrics
from strangler.overlay import Overlay, RampShares
from strangler.reload import ConfigHolder
from tests.support.ramps import Clock, Figures, config_text


def holder_on(path: Path, text: str, **options: bool) -> ConfigHolder:
    path.write_text(text)
    holder = ConfigHolder(str(path), Metrics(CollectorRegistry()), **options)
    holder.reload()
    return holder


def split_in_force(holder: ConfigHolder, route: str = "orders-read") -> dict[str, float]:
    assert holder.runtime is not None
    return dict(holder.runtime.routes[route].shares)


def ramp_id(holder: ConfigHolder) -> str:
    assert holder.runtime is not None
    return next(r.ramp.id for r in holder.runtime.config.routes if r.ramp is not None)


def test_the_overlay_survives_a_reload_and_goes_when_the_ramp_block_changes(tmp_path: Path) -> None:
    holder = holder_on(tmp_path / "routes.yaml", config_text())
    holder.apply_overlay(Overlay(ramps={"orders-read": RampShares(ramp_id(holder), (("orders", 25.0), ("legacy", 75.0)))}))
    assert split_in_force(holder) == {"orders": 25, "legacy": 75}
    assert holder.runtime.routes["orders-read"].split.bounds == (2500, 10000)
    (tmp_path / "routes.yaml").write_text(config_text(extra_route="  - {name: more, match: {path: /m}, to: legacy}\n"))
    holder.reload()
    assert split_in_force(holder) == {"orders": 25, "legacy": 75}           # another route changed
    assert holder.metrics.registry.get_sample_value(
        "strangler_split_percent", {"route": "orders-read", "upstream": "orders"}) == 25
    (tmp_path / "routes.yaml").write_text(config_text(steps="[5, 50, 100]"))
    holder.reload()
    assert split_in_force(holder) == {"orders": 5, "legacy": 95}            # its block changed: the file's split


def test_rollback_all_also_covers_a_route_that_a_reload_adds(tmp_path: Path) -> None:
    holder = holder_on(tmp_path / "routes.yaml", config_text())
    holder.apply_overlay(Overlay(rollback_all_to="legacy"))
    (tmp_path / "routes.yaml").write_text(config_text(
        extra_route="  - {name: late, match: {path: /late}, split: {orders: 50, legacy: 50}}\n"))
    holder.reload()
    assert split_in_force(holder, "late") == {"orders": 0, "legacy": 100}
    assert split_in_force(holder, "inventory") == {"inventory": 100}        # does not name legacy: left alone


async def test_raising_to_only_moves_cohorts_towards_it_and_a_rollback_moves_every_one_back(tmp_path: Path) -> None:
    """Across a whole ramp, a cohort that reached `to` never returns to legacy, until the rollback sends all back."""
    holder = holder_on(tmp_path / "routes.yaml", config_text(split="{legacy: 100, orders: 0}",
                                                            steps="[1, 5, 10, 25, 50, 75, 99]"))
    clock, figures = Clock(), Figures()
    controller = Controller(lambda: holder.runtime.config, figures, holder.apply_overlay, holder.metrics.control,
                            StateStore(tmp_path / "state"), clock=clock)
    controller.start()
    keys = [secrets.token_hex(8) for _ in range(3000)]
    moved: set[str] = set()

    def owners() -> dict[str, str]:
        table = holder.runtime.routes["orders-read"].split
        return {key: table.choose(key).upstream for key in keys}

    for expected in (1, 5, 10, 25, 50, 75):
        now = owners()
        assert moved <= {key for key, upstream in now.items() if upstream == "orders"}, "a cohort went back"
        moved = {key for key, upstream in now.items() if upstream == "orders"}
        assert abs(len(moved) / len(keys) * 100 - expected) < 3
        clock.now += 60
        await controller.tick()
    assert controller.ramps["orders-read"].percent == 99
    figures.window = None
    controller.act("orders-read", "rollback", "", "test")
    assert set(owners().values()) == {"legacy"}


def test_a_worker_follows_the_shares_file_and_keeps_the_last_good_one(tmp_path: Path, caplog) -> None:
    text = config_text().replace("version: 1\n", f"version: 1\nstate_dir: {tmp_path / 'state'}\n")
    holder = holder_on(tmp_path / "routes.yaml", text, follow_shares=True)
    shares = tmp_path / "state" / shares_file.SHARES_FILE
    atomic_write(shares, shares_file.encode(Overlay(rollback_all_to="legacy")))
    holder.follow_shares_now()
    assert split_in_force(holder) == {"orders": 0, "legacy": 100}
    shares.write_bytes(b"{half a file")
    holder.follow_shares_now()
    assert split_in_force(holder) == {"orders": 0, "legacy": 100} and "shares.refused" in caplog.text
    (tmp_path / "routes.yaml").write_text(text + "# a comment\n")
    holder.reload()
    assert split_in_force(holder) == {"orders": 0, "legacy": 100}
    shares.unlink()
    holder.follow_shares_now()
    assert split_in_force(holder) == {"orders": 5, "legacy": 95}


def test_the_shares_file_reads_back_what_was_written_and_refuses_anything_else() -> None:
    overlay = Overlay(ramps={"r": RampShares("abc", (("orders", 12.5), ("legacy", 87.5)))}, rollback_all_to="legacy")
    assert shares_file.decode(shares_file.encode(overlay)) == overlay
    for bad in (b"[]", b'{"format": "strangler.shares", "version": 9, "ramps": {}}',
                b'{"format": "strangler.shares", "version": 1, "ramps": {"r": {"split": 3}}}'):
        with pytest.raises(ValueError):
            shares_file.decode(bad)


# -- the local figures --------------------------------------------------------------------------

async def test_local_figures_are_the_window_s_deltas_of_the_proxy_s_own_metrics() -> None:
    metrics = Metrics(CollectorRegistry())
    figures = RegistryFigures(metrics)

    def serve(upstream: str, code: int, seconds: float, count: int) -> None:
        for _ in range(count):
            metrics.count_request("r", upstream, "GET", code)
            metrics.pair("r", upstream).duration.observe(seconds)

    serve("orders", 200, 0.02, 50)                       # before the window: not counted
    figures.begin_window("r", 100.0)
    serve("orders", 200, 0.02, 90)
    serve("orders", 503, 0.2, 10)
    serve("legacy", 200, 0.01, 300)
    metrics.fallbacks.labels("r", "orders", "legacy", "circuit_open").inc(4)
    metrics.breaker_transitions.labels("r", "orders", "open").inc()
    window = await figures.read_window("r", 100.0, 160.0)
    assert window is not None and window.seconds == 60
    orders, legacy = window.of("orders"), window.of("legacy")
    assert (orders.requests, orders.errors, orders.diverted, orders.breaker_opened) == (100, 10, 4, 1)
    assert (legacy.requests, legacy.errors) == (300, 0)
    assert 0.1 < orders.p95_s <= 0.25 and legacy.p95_s <= 0.01
    since_start = await figures.read_window("r", 50.0, 160.0)      # a window older than the process
    assert since_start is not None and since_start.of("orders").requests == 150


def test_p95_interpolates_within_the_bucket_as_prometheus_does() -> None:
    buckets = [(0.1, 50.0), (0.2, 90.0), (0.5, 100.0), (float("inf"), 100.0)]
    assert quantile_from_buckets(0.95, buckets) == pytest.approx(0.35)
    assert quantile_from_buckets(0.5, buckets) == pytest.approx(0.1)
    assert quantile_from_buckets(0.95, [(0.1, 0.0), (float("inf"), 0.0)]) is None
    assert quantile_from_buckets(0.95, [(0.1, 1.0), (float("inf"), 100.0)]) == 0.1

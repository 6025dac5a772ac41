"""`strangler control` and `strangler run --control URL` as real processes on loopback (no Prometheus needed):
the shares reach an instance at once, need the admin token, and stay when the controller goes away; and the
long-poll feed itself, in-process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from strangler.control.feed import SharesFeed
from strangler.overlay import EMPTY, Overlay, revision
from tests.support.metrics import routes, scrape
from tests.support.ramps import ramp_config
from tests.support.servers import REPO, Named, ProxyProcess, free_port, wait_until

TOKEN = "control-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def config_text(legacy: str, new: str, *, every: str = "1m", top: str = f"admin: {{token: {TOKEN}}}") -> str:
    return ramp_config(legacy, new, steps="[10, 50, 100]", split="{new: 0, legacy: 100}", top=top, every=every)


@pytest.fixture
def plane(tmp_path: Path, start_upstream):
    """A config, a controller (`strangler control`, no Prometheus) and a way to start instances following it."""
    legacy, new = start_upstream(Named("legacy")), start_upstream(Named("new"))
    path = tmp_path / "routes.yaml"
    path.write_text(config_text(legacy.url, new.url))
    started: list[ProxyProcess] = []
    control = ProxyProcess(path, "--state-dir", str(tmp_path / "state-control"), command="control", name="control")

    def instance(name: str, *extra: str, env: dict[str, str] | None = None) -> ProxyProcess:
        process = ProxyProcess(path, "--control", control.admin_url, "--state-dir", str(tmp_path / f"state-{name}"),
                               *extra, name=name, env=env)
        started.append(process.start())
        return process

    yield control.start(), instance
    for process in reversed(started):
        process.terminate()
    control.terminate()


def split_of(process: ProxyProcess) -> tuple[dict[str, float], str]:
    entry = routes(process.admin_url)["routes"][0]
    return entry["split"], entry["split_source"]


def test_an_instance_follows_the_controller_at_once_and_keeps_its_shares_while_it_is_away(plane) -> None:
    control, instance = plane
    first = instance("first")
    wait_until(lambda: split_of(first) == ({"new": 10.0, "legacy": 90.0}, "ramp"), timeout_s=3,
               what="the ramp's first step on the instance")
    assert scrape(first.admin_url).value("strangler_control_connected") == 1
    # An operator's step and roll back all at the controller reach the instance at once (the poll is held open;
    # the bound leaves room for a busy machine).
    assert httpx.post(control.admin_url + "/ramps/all/promote", headers=BEARER, timeout=5).status_code == 200
    wait_until(lambda: split_of(first) == ({"new": 50.0, "legacy": 50.0}, "ramp"), timeout_s=2,
               what="the promotion on the instance")
    assert httpx.post(control.admin_url + "/rollback-all", json={"reason": "drill"}, headers=BEARER,
                      timeout=5).status_code == 200
    wait_until(lambda: split_of(first)[1] == "rollback_all", timeout_s=2, what="roll back all on the instance")
    httpx.post(control.admin_url + "/rollback-all/lift", headers=BEARER, timeout=5).raise_for_status()
    wait_until(lambda: split_of(first) == ({"new": 50.0, "legacy": 50.0}, "ramp"), timeout_s=2, what="the lift")
    # The instance's own admin API sends operators to the controller.
    elsewhere = httpx.post(first.admin_url + "/ramps/all/pause", headers=BEARER, timeout=5)
    assert elsewhere.status_code == 409 and elsewhere.json()["controller"] == control.admin_url

    assert control.kill() != 0
    wait_until(lambda: scrape(first.admin_url).value("strangler_control_connected") == 0, timeout_s=3,
               what="the instance to see the controller gone")
    ready = httpx.get(first.admin_url + "/health/ready", timeout=5)
    assert ready.status_code == 200 and ready.json()["control"]["connected"] is False
    assert split_of(first) == ({"new": 50.0, "legacy": 50.0}, "ramp")
    answers = {httpx.get(first.url + "/x", headers={"X-User": f"u{n}"}, timeout=5).text for n in range(40)}
    assert answers == {"new", "legacy"}
    assert "control.lost" in first.log()

    # A restart while the controller is away serves the last shares, not the file's starting split.
    assert first.terminate() == 0
    first.start()
    assert split_of(first) == ({"new": 50.0, "legacy": 50.0}, "ramp")
    assert "control.restored" in first.log()
    time.sleep(1.2)
    assert scrape(first.admin_url).value("strangler_control_overlay_age_seconds") >= 1
    second = instance("second")      # a new instance with nothing kept: the config's split until the controller is back
    assert split_of(second) == ({"new": 0.0, "legacy": 100.0}, "config")

    control.start()
    for process in (first, second):
        wait_until(lambda: scrape(process.admin_url).value("strangler_control_connected") == 1, timeout_s=3,
                   what="the instances to reconnect")
    wait_until(lambda: split_of(second) == ({"new": 50.0, "legacy": 50.0}, "ramp"), timeout_s=2,
               what="the new instance to take the shares")
    assert scrape(first.admin_url).value("strangler_control_overlay_age_seconds") < 1
    assert "ramp.resumed route=all state=running percent=50" in control.log()


def test_the_controller_s_shares_need_the_admin_token(plane) -> None:
    control, instance = plane
    assert httpx.get(control.admin_url + "/control/shares", timeout=5).status_code == 401
    assert httpx.get(control.admin_url + "/control/shares", headers=BEARER, timeout=5).json()["ramps"]["all"]
    assert httpx.get(control.admin_url + "/control/shares?wait=99", headers=BEARER, timeout=5).status_code == 400
    wrong = instance("wrong", env={"STRANGLER_ADMIN_TOKEN": "not-the-token"})
    wait_until(lambda: "answered 401" in wrong.log(), timeout_s=3, what="the refusal in the instance's log")
    assert scrape(wrong.admin_url).value("strangler_control_connected") == 0
    assert split_of(wrong) == ({"new": 0.0, "legacy": 100.0}, "config")
    assert httpx.get(wrong.admin_url + "/health/ready", timeout=5).status_code == 200


def test_without_prometheus_every_step_is_inconclusive_and_says_why(tmp_path: Path, start_upstream) -> None:
    legacy, new = start_upstream(Named("legacy")), start_upstream(Named("new"))
    path = tmp_path / "routes.yaml"
    path.write_text(config_text(legacy.url, new.url, every="1s"))
    control = ProxyProcess(path, command="control").start()
    try:
        def ramp() -> dict:
            return httpx.get(control.admin_url + "/ramps", timeout=5).json()["ramps"][0]

        wait_until(lambda: ramp()["last_decisions"][0]["decision"] == "inconclusive", timeout_s=5,
                   what="an evaluation")
        found = ramp()
        assert (found["percent"], found["state"]) == (10, "running")
        assert "without --prometheus" in found["last_decisions"][0]["reason"]
        assert found["figures_source"]["source"] == "none"
        assert httpx.get(control.admin_url + "/health/ready", timeout=5).status_code == 200
    finally:
        assert control.terminate() == 0


def test_control_refuses_to_bind_a_public_admin_address_without_a_token(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(config_text("http://127.0.0.1:9", "http://127.0.0.1:9", top="admin: {host: 0.0.0.0}"))
    env = {name: value for name, value in os.environ.items() if name != "STRANGLER_ADMIN_TOKEN"}
    done = subprocess.run([sys.executable, "-m", "strangler", "control", "--config", str(path), "--admin-port",
                           str(free_port())], cwd=REPO, capture_output=True, text=True, timeout=20, env=env)
    assert done.returncode == 1 and "without an admin token" in done.stderr


# -- the long-poll feed, in-process ----------------------------------------------------------------------------

async def test_a_poll_is_answered_at_once_for_another_revision_and_held_until_a_change_for_the_same() -> None:
    feed = SharesFeed(lambda: "v1")
    assert (await feed.next_after(None, 5))["revision"] == revision(EMPTY)
    held = asyncio.create_task(feed.next_after(revision(EMPTY), 5))
    await asyncio.sleep(0.05)
    assert not held.done()
    changed = Overlay(rollback_all_to="legacy")
    feed.publish(changed)
    answer = await asyncio.wait_for(held, 1)
    assert answer["rollback_all_to"] == "legacy" and answer["revision"] == revision(changed)
    assert answer["config_version"] == "v1"
    started = time.monotonic()
    assert (await feed.next_after(revision(changed), 0.1))["revision"] == revision(changed)
    assert 0.1 <= time.monotonic() - started < 1


async def test_closing_the_feed_answers_every_held_poll_at_once() -> None:
    feed = SharesFeed(lambda: None)
    held = [asyncio.create_task(feed.next_after(feed.revision, 30)) for _ in range(3)]
    await asyncio.sleep(0.05)
    feed.close()
    answers = await asyncio.wait_for(asyncio.gather(*held), 1)
    assert {answer["revision"] for answer in answers} == {revision(EMPTY)}
    assert (await asyncio.wait_for(feed.next_after(feed.revision, 30), 1))["revision"] == revision(EMPTY)


def test_with_workers_the_parent_follows_the_controller_and_every_worker_applies_its_shares(plane) -> None:
    control, instance = plane
    workers = instance("workers", "--workers", "2")
    wait_until(lambda: split_of(workers) == ({"new": 10.0, "legacy": 90.0}, "ramp"), timeout_s=3,
               what="the parent to take the shares")

    def answers() -> set[str]:
        # Fresh connections, so that both workers answer some.
        found = set()
        for n in range(20):
            with httpx.Client(timeout=5) as client:
                found.add(client.get(workers.url + "/x", headers={"X-User": f"w{n}"}).text)
        return found

    httpx.post(control.admin_url + "/ramps/all/promote", headers=BEARER, timeout=5).raise_for_status()
    wait_until(lambda: answers() == {"new", "legacy"}, timeout_s=3, interval_s=0.1, what="the workers at 50%")
    httpx.post(control.admin_url + "/rollback-all", json={"reason": "workers"}, headers=BEARER,
               timeout=5).raise_for_status()
    # Each worker reads the shares file the parent keeps within its watch interval (0.4 s).
    wait_until(lambda: answers() == {"legacy"}, timeout_s=3, interval_s=0.1, what="every worker on legacy")
    assert scrape(workers.admin_url).value("strangler_control_connected") == 1

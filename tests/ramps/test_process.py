"""Ramps and roll back all in `strangler run`, with `every: 1s`, generated load and real upstreams on loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from tests.support.metrics import scrape
from tests.support.ramps import ramp_config
from tests.support.servers import REPO, Named, ProxyProcess, free_port, wait_until


class Flaky:
    """Answers 500 to its first request and every `every`-th after it (1 in 20: 5%), else 200 with its name."""

    def __init__(self, name: str, every: int = 20) -> None:
        self.name, self.every, self.count = name, every, 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        index, self.count = self.count, self.count + 1
        status = 500 if index % self.every == 0 else 200
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": self.name.encode()})


@dataclass(frozen=True)
class Setup:
    path: Path          # the config, written
    legacy: str         # the upstreams' URLs
    new: str


@pytest.fixture
def upstreams(tmp_path: Path, start_upstream) -> Callable[..., Setup]:
    """Start `legacy` and `new` (Named, or the app given) and write a ramp config for them (ramp_config's keys)."""

    def setup(new_app: object | None = None, **config: Any) -> Setup:
        legacy, new = start_upstream(Named("legacy")), start_upstream(new_app or Named("new"))
        path = tmp_path / "routes.yaml"
        path.write_text(ramp_config(legacy.url, new.url, **config))
        return Setup(path, legacy.url, new.url)

    return setup


@dataclass(frozen=True)
class Served:
    user: str
    upstream: str
    status: int
    started: float          # time.monotonic() when the request was sent


class Load:
    """`concurrency` clients in a thread, each with its own users, sending GETs until stopped; every answer kept."""

    def __init__(self, url: str, concurrency: int = 4, users_per_client: int = 25) -> None:
        self.url, self.concurrency, self.users = url, concurrency, users_per_client
        self.served: list[Served] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        wait_until(lambda: len(self.served) > 0 or self.failures, what="the first answer")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
            await asyncio.gather(*(self._client(session, n) for n in range(self.concurrency)))

    async def _client(self, session: aiohttp.ClientSession, number: int) -> None:
        sent = 0
        while not self._stop.is_set():
            user = f"u{number}-{sent % self.users}"
            sent += 1
            started = time.monotonic()
            try:
                async with session.get(self.url + "/x", headers={"X-User": user}) as response:
                    await response.read()
                    self.served.append(Served(user, response.headers.get("x-strangler-upstream", ""), response.status,
                                              started))
            except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                self.failures.append(f"{user}: {error!r}")

    def count(self) -> int:
        return len(self.served)


def ramp_of(proxy: ProxyProcess, route: str = "all") -> dict:
    document = httpx.get(proxy.admin_url + "/ramps", timeout=5).json()
    return next(ramp for ramp in document["ramps"] if ramp["route"] == route)


def never_back_to_legacy(served: list[Served]) -> None:
    """Per user, in the order each client sent them: once on `new`, never on legacy again."""
    seen_new: set[str] = set()
    for answer in served:
        if answer.upstream == "new":
            seen_new.add(answer.user)
        assert not (answer.upstream == "legacy" and answer.user in seen_new), f"{answer.user} went back to legacy"


def test_a_healthy_ramp_goes_5_to_100_in_order_resumes_after_kill_9_and_no_cohort_goes_back(upstreams) -> None:
    path = upstreams().path
    proxy = ProxyProcess(path).start()
    served: list[Served] = []
    try:
        with Load(proxy.url) as load:
            wait_until(lambda: ramp_of(proxy)["percent"] >= 25, timeout_s=20, what="the ramp to pass 5%")
        served += load.served
        assert not load.failures
        # No traffic now: the next windows are inconclusive, so the ramp stands still where it is.
        decisions = len(ramp_of(proxy)["last_decisions"])
        wait_until(lambda: ramp_of(proxy)["last_decisions"][0]["decision"] == "inconclusive"
                   and len(ramp_of(proxy)["last_decisions"]) > decisions, timeout_s=10, what="an inconclusive window")
        standing = ramp_of(proxy)
        os.killpg(proxy.pid, signal.SIGKILL)
        proxy.terminate()                                   # already dead: only reaps it and closes its log
        proxy = ProxyProcess(path).start()
        resumed = ramp_of(proxy)
        assert (resumed["percent"], resumed["state"]) == (standing["percent"], "running")
        assert resumed["window_started_at"] == standing["window_started_at"]        # the window kept its age
        assert "ramp.resumed route=all state=running" in proxy.log()
        with Load(proxy.url) as load:
            wait_until(lambda: ramp_of(proxy)["state"] == "done", timeout_s=30, what="the ramp to finish")
        served += load.served
        assert not load.failures
        done = ramp_of(proxy)
        steps = [entry["percent"] for entry in reversed(done["history"]) if "decision" in entry]
        assert steps == [25, 50, 100]
        assert done["split"] == {"new": 100, "legacy": 0}
        assert all(answer.status == 200 for answer in served)
        never_back_to_legacy(served)
        metrics = scrape(proxy.admin_url)
        assert metrics.value("strangler_ramp_state", route="all", state="done") == 1
        assert metrics.value("strangler_ramp_percent", route="all", upstream="new") == 100
        assert metrics.value("strangler_split_percent", route="all", upstream="new") == 100
    finally:
        proxy.terminate()


def test_a_planted_fault_rolls_the_ramp_back_at_its_first_window_and_legacy_serves_everything(upstreams) -> None:
    proxy = ProxyProcess(upstreams(Flaky("new")).path).start()
    try:
        # Three requests a window: too little to judge; the ramp holds and says why.
        for _ in range(3):
            httpx.get(proxy.url + "/x", timeout=5)
        wait_until(lambda: ramp_of(proxy)["last_decisions"][:1] and
                   ramp_of(proxy)["last_decisions"][0]["decision"] == "inconclusive", what="an inconclusive window")
        held = ramp_of(proxy)
        assert (held["percent"], held["state"], held["last_decisions"][0]["gate"]) == (5, "running", "min_requests")
        with Load(proxy.url):
            wait_until(lambda: ramp_of(proxy)["state"] != "running", timeout_s=20, what="a decision on the fault")
        ramp = ramp_of(proxy)
        assert (ramp["state"], ramp["percent"]) == ("rolled_back", 0)
        rollback = ramp["history"][0]
        assert (rollback["decision"], rollback["gate"], rollback["from_percent"]) == ("rollback", "max_error_rate", 5)
        assert rollback["figures"]["to"]["errors"] >= 1
        assert "ramp.decision route=all decision=rollback gate=max_error_rate percent=5->0" in proxy.log()
        assert scrape(proxy.admin_url).value("strangler_ramp_decisions_total", route="all", decision="rollback",
                                             gate="max_error_rate") == 1
        after = [httpx.get(proxy.url + "/x", headers={"X-User": f"v{n}"}, timeout=5) for n in range(40)]
        assert {answer.headers["x-strangler-upstream"] for answer in after} == {"legacy"}
    finally:
        proxy.terminate()


def rollback_all_cli(proxy: ProxyProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "strangler", "rollback-all", "--admin", proxy.admin_url, *args],
                          cwd=REPO, capture_output=True, text=True, timeout=20)


def test_rollback_all_under_32_clients_moves_everything_fails_nothing_and_holds_through_reloads_and_restarts(
        upstreams) -> None:
    path = upstreams(split="{new: 50, legacy: 50}", steps="[50, 100]", min_requests=10**6).path
    valid = path.read_text()
    proxy = ProxyProcess(path).start()
    try:
        path.write_text(valid.replace("routes:", "routes: [oops"))     # on disk now: invalid; the running config stays
        with Load(proxy.url, concurrency=32, users_per_client=4) as load:
            wait_until(lambda: any(a.upstream == "new" for a in load.served), what="new to serve some")
            done = rollback_all_cli(proxy, "--reason", "drill under load")
            after = time.monotonic()
            assert done.returncode == 0, done.stderr
            assert "back to legacy: all" in done.stdout
            wait_until(lambda: sum(a.started > after for a in load.served) >= 200, what="200 answers after it")
        assert not load.failures, load.failures[:5]
        assert all(answer.status == 200 for answer in load.served)
        late = [answer for answer in load.served if answer.started > after]
        assert {answer.upstream for answer in late} == {"legacy"}
        assert scrape(proxy.admin_url).value("strangler_rollback_all_active") == 1
        again = rollback_all_cli(proxy, "--reason", "second click")
        assert again.returncode == 0 and "already active" in again.stdout

        path.write_text(valid + "# reloaded\n")
        assert httpx.post(proxy.admin_url + "/reload", timeout=5).status_code == 200
        assert all(httpx.get(proxy.url + "/x", headers={"X-User": f"r{n}"}, timeout=5).text == "legacy"
                   for n in range(20))
        assert proxy.terminate() == 0
        proxy = ProxyProcess(path).start()
        assert httpx.get(proxy.admin_url + "/rollback-all", timeout=5).json()["reason"] == "drill under load"
        assert all(httpx.get(proxy.url + "/x", headers={"X-User": f"s{n}"}, timeout=5).text == "legacy"
                   for n in range(20))
        lifted = rollback_all_cli(proxy, "--lift")
        assert lifted.returncode == 0 and "lifted" in lifted.stdout
        answers = {httpx.get(proxy.url + "/x", headers={"X-User": f"t{n}"}, timeout=5).text for n in range(40)}
        assert answers == {"legacy", "new"}
        assert "rollback_all.started" in proxy.log() or "rollback_all.resumed" in proxy.log()
    finally:
        proxy.terminate()


def test_admin_posts_need_the_token_and_their_own_origin_on_real_sockets(tmp_path: Path, upstreams) -> None:
    setup = upstreams(top="admin: {host: 127.0.0.1, token: file-token}")
    proxy = ProxyProcess(setup.path, env={"STRANGLER_ADMIN_TOKEN": "env-token"}).start()
    try:
        url = proxy.admin_url
        body = {"reason": "test"}
        assert httpx.post(url + "/ramps/all/pause", timeout=5).status_code == 401
        assert httpx.post(url + "/ramps/all/pause", headers={"Authorization": "Bearer file-token"}, timeout=5) \
            .status_code == 401                                   # the environment's token takes its place
        bearer = {"Authorization": "Bearer env-token"}
        cross = httpx.post(url + "/rollback-all", json=body, headers={**bearer, "Origin": "http://evil.example"},
                           timeout=5)
        assert cross.status_code == 403 and cross.headers["content-type"] == "application/problem+json"
        own = httpx.post(url + "/ramps/all/pause", headers={**bearer, "Origin": url}, timeout=5)
        assert own.status_code == 200 and own.json()["state"] == "paused"
        assert httpx.post(url + "/ramps/nothing/pause", headers=bearer, timeout=5).status_code == 404
        assert httpx.get(url + "/metrics", timeout=5).status_code == 200
        assert httpx.get(url + "/health/ready", timeout=5).status_code == 200
    finally:
        proxy.terminate()
    wild = tmp_path / "wild.yaml"
    wild.write_text(ramp_config(setup.legacy, setup.new, top="admin: {host: 0.0.0.0}"))
    refused = subprocess.run([sys.executable, "-m", "strangler", "run", "--config", str(wild), "--port",
                              str(free_port()), "--admin-port", str(free_port())], cwd=REPO, capture_output=True,
                             text=True, timeout=20, env={k: v for k, v in os.environ.items() if k != "STRANGLER_ADMIN_TOKEN"})
    assert refused.returncode == 1 and "without an admin token" in refused.stderr


def test_with_workers_the_parent_s_controller_ramps_on_every_worker_s_figures_and_rolls_all_back(upstreams) -> None:
    path = upstreams(split="{new: 50, legacy: 50}", steps="[50, 100]", min_requests=20).path
    proxy = ProxyProcess(path, "--workers", "2").start()
    try:
        with Load(proxy.url, concurrency=8) as load:
            wait_until(lambda: ramp_of(proxy)["state"] == "done", timeout_s=30, what="the ramp to finish")
            wait_until(lambda: load.served[-1].upstream == "new", what="the workers to follow")
            done = httpx.post(proxy.admin_url + "/rollback-all", json={"reason": "workers drill"}, timeout=5)
            assert done.status_code == 200
            after = time.monotonic()
            by_upstream: dict[str, int] = defaultdict(int)

            def legacy_only_for_a_while() -> bool:
                by_upstream.clear()
                for answer in load.served[-200:]:
                    by_upstream[answer.upstream] += 1
                return len(load.served) > 200 and set(by_upstream) == {"legacy"} and load.served[-200].started > after

            wait_until(legacy_only_for_a_while, timeout_s=10, what="every worker to send all to legacy")
        assert not load.failures and all(answer.status == 200 for answer in load.served)
    finally:
        proxy.terminate()

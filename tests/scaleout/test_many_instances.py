"""Several proxy instances on one machine, one control plane on Prometheus, HAProxy in front.

One rig for the module, whose checks run in order on the same processes: 3
`strangler run --control` instances, `strangler control --prometheus`, a real
Prometheus scraping the 3 every second, HAProxy balancing round-robin with
health checks on /health/ready, and upstreams in this process. Needs the
`prometheus` and `haproxy` binaries (Debian's packages; .ci/run installs both):
skipped, saying how to install them, where either is missing.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from tests.support.haproxy import INSTALL as HAPROXY_INSTALL, HAProxy, haproxy_binary
from tests.support.metrics import routes, scrape
from tests.support.prometheus import INSTALL as PROMETHEUS_INSTALL, Prometheus
from tests.support.servers import ProxyProcess, ThreadedServer, free_port, wait_until

TOKEN = "scale-out-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
APPLIED_WITHIN_S = 3.0
ROLLBACK_ALL_WITHIN_S = 2.0
INSTANCES = ("i1", "i2", "i3")


class Side:
    """An upstream: GET answers its name (every `fail_every`-th with 500); POST /orders records its X-Order-Id."""

    def __init__(self, name: str, fail_every: int = 0) -> None:
        self.name, self.fail_every = name, fail_every
        self.answered = 0
        self.orders: Counter[str] = Counter()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        status = 200
        if scope["method"] == "POST":
            order = dict(scope["headers"]).get(b"x-order-id", b"").decode()
            self.orders[order] += 1
            status = 201
        elif self.fail_every:
            self.answered += 1
            status = 500 if self.answered % self.fail_every == 0 else 200
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": self.name.encode()})


def config_text(urls: dict[str, str]) -> str:
    return f"""
version: 1
admin: {{token: {TOKEN}}}
upstreams:
  legacy: {{url: "{urls['legacy']}", role: legacy}}
  new: {{url: "{urls['new']}"}}
  bad: {{url: "{urls['bad']}"}}
routes:
  - name: cohorts
    match: {{path: /cohorts}}
    split: {{new: 50, legacy: 50}}
  - name: orders
    match: {{path: /orders, methods: [POST]}}
    to: legacy
  - name: ramped
    match: {{path: /ramped}}
    split: {{new: 0, legacy: 100}}
    fallback: legacy
    ramp: {{to: new, steps: [10, 30, 60, 100], every: 5s, gates: {{min_requests: 10, max_error_rate: 1%}}}}
  - name: flaky
    match: {{path: /flaky}}
    split: {{bad: 20, legacy: 80}}
    ramp: {{to: bad, steps: [20, 50, 100], every: 5s, gates: {{min_requests: 10, max_error_rate: 1%}}}}
"""


class Observer:
    """Polls every instance's GET /routes; remembers when each first showed each split of each route."""

    def __init__(self, instances: dict[str, ProxyProcess]) -> None:
        self.instances = instances
        self.first_seen: dict[tuple[str, str, tuple[tuple[str, float], ...]], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=1) as client:
            while not self._stop.is_set():
                for name, instance in self.instances.items():
                    try:
                        document = client.get(instance.admin_url + "/routes").json()
                    except (httpx.HTTPError, ValueError):
                        continue
                    seen = time.time()
                    for route in document["routes"]:
                        key = (name, route["name"], tuple(sorted(route["split"].items())))
                        self.first_seen.setdefault(key, seen)
                self._stop.wait(0.1)

    def when(self, instance: str, route: str, split: dict[str, float]) -> float | None:
        return self.first_seen.get((instance, route, tuple(sorted(split.items()))))

    def start(self) -> "Observer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@dataclass
class Answer:
    client: int
    path: str
    status: int
    upstream: str
    instance: str


@dataclass
class Traffic:
    """`clients` loops through HAProxy in a thread, each with its cohort cookie, until stopped; every answer kept.

    POSTs go to /orders with an order id of their own; `pause_s` between requests leaves the machine's two CPUs
    to the processes under test.
    """

    url: str
    paths: tuple[str, ...]
    cookies: list[str | None]
    pause_s: float = 0.02
    answers: list[Answer] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    posted: list[str] = field(default_factory=list)          # order ids answered 201

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> "Traffic":
        self._thread.start()
        wait_until(lambda: bool(self.answers or self.failures), what="the first answer through haproxy")
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def since(self, count: int) -> list[Answer]:
        return self.answers[count:]

    async def _run(self) -> None:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(), timeout=aiohttp.ClientTimeout(total=20),
                                         connector=aiohttp.TCPConnector(limit=0)) as session:
            await asyncio.gather(*(self._client(session, number, cookie) for number, cookie in enumerate(self.cookies)))

    async def _client(self, session: aiohttp.ClientSession, number: int, cookie: str | None) -> None:
        headers = {"Cookie": f"strangler_cohort={cookie}"} if cookie else {}
        for sent in itertools.count():
            if self._stop.is_set():
                return
            path = self.paths[sent % len(self.paths)]
            order = f"c{number}-{sent}"
            try:
                if path == "/orders":
                    request = session.post(self.url + path, data=b'{"sku": 1}', headers={**headers, "X-Order-Id": order})
                else:
                    request = session.get(self.url + path, headers=headers)
                async with request as response:
                    await response.read()
                    self.answers.append(Answer(number, path, response.status,
                                               response.headers.get("x-strangler-upstream", ""),
                                               response.headers.get("x-instance", "")))
                    if path == "/orders" and response.status == 201:
                        self.posted.append(order)
            except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                self.failures.append(f"{path} client {number}: {error!r}")
            await asyncio.sleep(self.pause_s)


@dataclass
class Rig:
    workdir: Path
    sides: dict[str, Side]
    servers: list[ThreadedServer]
    instances: dict[str, ProxyProcess]
    control: ProxyProcess
    prometheus: Prometheus
    haproxy: HAProxy
    observer: Observer
    background: Traffic
    cohorts: dict[str, str] = field(default_factory=dict)       # cohort cookie -> the upstream it saw

    def ramps(self) -> dict[str, dict]:
        document = httpx.get(self.control.admin_url + "/ramps", timeout=5).json()
        return {ramp["route"]: ramp for ramp in document["ramps"]}

    def splits(self, route: str) -> dict[str, dict[str, float]]:
        """Each instance's split in force for `route`."""
        return {name: next(entry["split"] for entry in routes(instance.admin_url)["routes"] if entry["name"] == route)
                for name, instance in self.instances.items()}


def _missing_tools() -> str | None:
    from shutil import which
    missing = [f"`prometheus` ({PROMETHEUS_INSTALL})" if which("prometheus") is None else "",
               f"`haproxy` ({HAPROXY_INSTALL})" if haproxy_binary() is None else ""]
    missing = [tool for tool in missing if tool]
    return "needs " + " and ".join(missing) if missing else None


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    missing = _missing_tools()
    if missing:
        pytest.skip(missing)
    workdir = tmp_path_factory.mktemp("scaleout")
    sides = {"legacy": Side("legacy"), "new": Side("new"), "bad": Side("bad", fail_every=10)}
    stop: list[Any] = []
    try:
        servers = [ThreadedServer(side).start() for side in sides.values()]
        stop.extend(server.stop for server in servers)
        config = workdir / "routes.yaml"
        config.write_text(config_text({name: server.url for name, server in zip(sides, servers)}))
        control_port = free_port()
        instances = {name: ProxyProcess(config, "--control", f"http://127.0.0.1:{control_port}",
                                        "--state-dir", str(workdir / f"state-{name}"), "--shutdown-delay", "1s",
                                        "--drain-timeout", "10s", name=name) for name in INSTANCES}
        prometheus = Prometheus(workdir, *(f"127.0.0.1:{instance.admin_port}" for instance in instances.values()))
        control = ProxyProcess(config, "--prometheus", prometheus.url, "--scrape-interval", "1s",
                               "--state-dir", str(workdir / "state-control"), command="control",
                               admin_port=control_port, name="control")
        prometheus.start()
        stop.append(prometheus.stop)
        for instance in instances.values():
            # Ready before the controller exists: it serves the config's shares meanwhile.
            instance.start()
        stop.append(lambda: _terminate_together(instances.values()))
        observer = Observer(instances).start()
        stop.append(observer.stop)
        control.start()
        stop.append(control.terminate)
        haproxy = HAProxy(workdir, {name: (i.port, i.admin_port) for name, i in instances.items()}).start()
        stop.append(haproxy.stop)
        for name in instances:
            haproxy.wait_for(name, "UP")
        background = Traffic(haproxy.url, ("/ramped", "/flaky"), [None] * 6).start()
        stop.append(background.stop)
        yield Rig(workdir, sides, servers, instances, control, prometheus, haproxy, observer, background)
    finally:
        for action in reversed(stop):
            action()


def _terminate_together(processes: Any) -> None:
    with ThreadPoolExecutor() as pool:
        list(pool.map(lambda process: process.terminate() if process.process is not None else None, processes))


def _at(decision: dict) -> float:
    return datetime.datetime.fromisoformat(decision["at"]).timestamp()


def _applied_everywhere_in_time(rig: Rig, route: str, decision: dict, split: dict[str, float]) -> None:
    decided = _at(decision)
    for name in INSTANCES:
        def seen() -> bool:
            return rig.observer.when(name, route, split) is not None
        wait_until(seen, timeout_s=APPLIED_WITHIN_S + 2, what=f"{name} to show {route} at {split}")
        lag = rig.observer.when(name, route, split) - decided     # type: ignore[operator]
        assert lag <= APPLIED_WITHIN_S, f"{name} applied {route} {split} {lag:.2f}s after the decision"


# -- the checks, in order ------------------------------------------------------------------------------------

def test_200_cohorts_each_see_one_upstream_whichever_instance_answers(rig: Rig) -> None:
    traffic: dict[int, list[tuple[str, str]]] = defaultdict(list)
    cookies: dict[int, str] = {}
    failures: list[str] = []

    async def client(session: aiohttp.ClientSession, gate: asyncio.Semaphore, number: int) -> None:
        async with gate:
            for _ in range(6):
                headers = {"Cookie": f"strangler_cohort={cookies[number]}"} if number in cookies else {}
                try:
                    async with session.get(rig.haproxy.url + "/cohorts", headers=headers) as response:
                        await response.read()
                        assert response.status == 200, response.status
                        if number not in cookies:
                            cookies[number] = response.cookies["strangler_cohort"].value
                        traffic[number].append((response.headers["x-strangler-upstream"],
                                                response.headers["x-instance"]))
                except (aiohttp.ClientError, asyncio.TimeoutError, AssertionError, KeyError) as error:
                    failures.append(repr(error))

    async def run() -> None:
        gate = asyncio.Semaphore(50)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar(),
                                         timeout=aiohttp.ClientTimeout(total=20)) as session:
            await asyncio.gather(*(client(session, gate, number) for number in range(200)))

    asyncio.run(run())
    assert failures == []
    assert len(traffic) == 200 and all(len(seen) == 6 for seen in traffic.values())
    for number, seen in traffic.items():
        assert len({upstream for upstream, _ in seen}) == 1, f"client {number} saw {seen}"
    instances = {number: {instance for _, instance in seen} for number, seen in traffic.items()}
    assert set().union(*instances.values()) == set(INSTANCES)
    assert sum(len(found) > 1 for found in instances.values()) >= 190, "round-robin should spread each client"
    upstreams = Counter(seen[0][0] for seen in traffic.values())
    assert set(upstreams) == {"new", "legacy"} and min(upstreams.values()) >= 60, upstreams
    rig.cohorts.update({cookies[number]: seen[0][0] for number, seen in traffic.items()})


def test_a_new_upstream_failing_10_percent_is_rolled_back_from_prometheus_s_figures(rig: Rig) -> None:
    wait_until(lambda: rig.ramps()["flaky"]["state"] == "rolled_back", timeout_s=45, interval_s=0.25,
               what="the flaky ramp to be rolled back")
    flaky = rig.ramps()["flaky"]
    rollback = flaky["history"][0]
    assert (rollback["decision"], rollback["gate"], rollback["by"]) == ("rollback", "max_error_rate", "controller")
    # The controller serves no traffic of its own: these figures are every instance's, through Prometheus.
    to = rollback["figures"]["to"]
    assert to["requests"] >= 10 and to["errors"] >= 1 and to["error_rate_percent"] > 1, to
    shown = flaky["figures_source"]
    assert shown["source"] == "prometheus" and shown["url"] == rig.prometheus.url
    assert shown["promql"]["p95_s"].startswith("histogram_quantile(0.95, sum by (le, upstream) (rate(")
    # What the controller read is what Prometheus answers to the PromQL it shows.
    assert rig.prometheus.query(shown["promql"]["requests"]) != []
    _applied_everywhere_in_time(rig, "flaky", rollback, {"bad": 0.0, "legacy": 100.0})
    assert "ramp.decision route=flaky decision=rollback gate=max_error_rate" in rig.control.log()


def test_with_the_controller_killed_the_instances_and_a_restarted_one_keep_the_last_shares(rig: Rig) -> None:
    wait_until(lambda: rig.ramps()["ramped"]["percent"] == 30, timeout_s=45, interval_s=0.1,
               what="the ramp to reach 30%")
    last = {"new": 30.0, "legacy": 70.0}
    wait_until(lambda: rig.splits("ramped") == {name: last for name in INSTANCES}, timeout_s=APPLIED_WITHIN_S,
               what="every instance at 30%")
    assert rig.control.kill() != 0

    def disconnected() -> bool:
        return all(scrape(i.admin_url).value("strangler_control_connected") == 0 for i in rig.instances.values())

    wait_until(disconnected, timeout_s=5, what="every instance to see the controller gone")
    answered = len(rig.background.answers)
    time.sleep(1.5)
    for instance in rig.instances.values():
        ready = httpx.get(instance.admin_url + "/health/ready", timeout=5)
        assert ready.status_code == 200 and ready.json()["control"]["connected"] is False
        assert scrape(instance.admin_url).value("strangler_control_overlay_age_seconds") >= 1
    assert len(rig.background.answers) > answered + 20 and rig.background.failures == []

    restarted = rig.instances["i2"]
    assert restarted.terminate() == 0
    restarted.start()
    assert "control.restored" in restarted.log()
    assert rig.splits("ramped") == {name: last for name in INSTANCES}
    assert rig.splits("flaky")["i2"] == {"bad": 0.0, "legacy": 100.0}
    rig.haproxy.wait_for("i2", "UP")


def test_the_restarted_controller_resumes_its_ramps_and_every_step_reaches_all_3_within_3s(rig: Rig) -> None:
    rig.control.start()
    log = rig.control.log().split("strangler.control_started")[-2]      # this start's lines, before it serves
    assert "ramp.resumed route=ramped state=running percent=30" in log
    assert "ramp.resumed route=flaky state=rolled_back percent=0" in log
    wait_until(lambda: all(scrape(i.admin_url).value("strangler_control_connected") == 1
                           for i in rig.instances.values()), timeout_s=5, what="every instance to reconnect")
    wait_until(lambda: rig.ramps()["ramped"]["state"] == "done", timeout_s=45, interval_s=0.25,
               what="the ramp to finish")
    ramped = rig.ramps()["ramped"]
    steps = [entry for entry in reversed(ramped["history"]) if entry.get("decision") in ("advance", "done")]
    assert [entry["percent"] for entry in steps] == [10, 30, 60, 100]
    assert all(entry["figures"]["to"]["requests"] >= 10 for entry in steps[1:])    # judged on Prometheus's figures
    for entry in steps:
        _applied_everywhere_in_time(rig, "ramped", entry, {"new": entry["percent"], "legacy": 100 - entry["percent"]})
    for route in ("cohorts", "orders", "ramped", "flaky"):
        assert len({str(split) for split in rig.splits(route).values()}) == 1, f"the instances disagree on {route}"


def test_rollback_all_at_the_controller_reaches_all_3_within_2s(rig: Rig) -> None:
    sent = time.monotonic()
    done = httpx.post(rig.control.admin_url + "/rollback-all", json={"reason": "scale-out drill"}, headers=BEARER,
                      timeout=5)
    assert done.status_code == 200, done.text

    def everywhere() -> bool:
        return all(entry["split_source"] == "rollback_all" for instance in rig.instances.values()
                   for entry in routes(instance.admin_url)["routes"])

    wait_until(everywhere, timeout_s=ROLLBACK_ALL_WITHIN_S + 3, interval_s=0.02, what="roll back all everywhere")
    assert time.monotonic() - sent <= ROLLBACK_ALL_WITHIN_S
    refused = httpx.post(rig.instances["i1"].admin_url + "/rollback-all", json={"reason": "here"}, headers=BEARER,
                         timeout=5)
    assert refused.status_code == 409 and refused.json()["controller"] == rig.control.admin_url
    lifted = httpx.post(rig.control.admin_url + "/rollback-all/lift", headers=BEARER, timeout=5)
    assert lifted.status_code == 200
    wait_until(lambda: not any(entry["split_source"] == "rollback_all" for instance in rig.instances.values()
                               for entry in routes(instance.admin_url)["routes"]), timeout_s=5, what="the lift")


def test_a_rolling_restart_under_32_clients_fails_nothing_and_applies_no_post_twice(rig: Rig) -> None:
    rig.background.stop()
    cookies = list(rig.cohorts)[:32]
    clients = Traffic(rig.haproxy.url, ("/cohorts", "/orders"), cookies, pause_s=0.005).start()
    try:
        for name in INSTANCES:
            before = len(clients.answers)
            wait_until(lambda: len(clients.answers) > before + 100, timeout_s=20, what="traffic before the restart")
            instance = rig.instances[name]
            assert instance.terminate() == 0, instance.log()[-2000:]
            instance.start()
            wait_until(lambda: scrape(instance.admin_url).value("strangler_control_connected") == 1, timeout_s=3,
                       what=f"{name} to reconnect to the controller")
            rig.haproxy.wait_for(name, "UP")
            restarted_at = len(clients.answers)
            wait_until(lambda: any(answer.instance == name for answer in clients.since(restarted_at)), timeout_s=10,
                       what=f"{name} to serve again")
    finally:
        clients.stop()
    assert clients.failures == []
    assert {answer.status for answer in clients.answers} <= {200, 201}, Counter(a.status for a in clients.answers)
    for answer in clients.answers:
        if answer.path == "/cohorts":
            assert answer.upstream == rig.cohorts[cookies[answer.client]], answer
    orders = rig.sides["legacy"].orders
    duplicated = {order: count for order, count in orders.items() if count > 1}
    assert duplicated == {}
    assert set(clients.posted) <= set(orders) and len(clients.posted) >= 100
    for name in INSTANCES:
        assert "strangler.draining ready=503 for=1s" in rig.instances[name].log()

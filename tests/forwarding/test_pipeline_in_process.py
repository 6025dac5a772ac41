"""The whole data path in-process: routing -> split -> breaker -> retry -> forward -> record.

strangler's ASGI app runs in the test's loop over scripted upstreams (tests/support/fake_upstream.py)
with an injected clock, so each case takes milliseconds. The bulkheads and breakers are
wrapped to count: whatever ends a request (an answer, an upstream fault, a client that goes
away, a cancellation at any await), every bulkhead slot taken is given back once and every
breaker permit issued is settled once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strangler.app import ProxyApp
from strangler.bulkhead import Bulkhead
from strangler.errors import ResponseAborted
from strangler.metrics import Metrics
from strangler.reload import ConfigHolder
from tests.support.fake_upstream import GARBAGE, HANG, RESET, FakeUpstreams, Reply

NEW = "http://new.internal:8080"
LEGACY = "http://legacy.internal:8080"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingBulkhead(Bulkhead):
    __slots__ = ("acquired", "released", "over_released")

    def __init__(self, max_concurrent: int) -> None:
        super().__init__(max_concurrent)
        self.acquired = self.released = self.over_released = 0

    def try_acquire(self) -> bool:
        taken = super().try_acquire()
        self.acquired += taken
        return taken

    def release(self) -> None:
        if self.in_flight == 0:
            self.over_released += 1
        self.released += 1
        super().release()


class CountingPermit:
    def __init__(self, permit: Any, ledger: list[CountingPermit]) -> None:
        self._permit = permit
        self.settled: str | None = None
        ledger.append(self)

    def _settle(self, how: str) -> None:
        if self.settled is None:
            self.settled = how
        getattr(self._permit, how)()

    def record_success(self) -> None:
        self._settle("record_success")

    def record_failure(self) -> None:
        self._settle("record_failure")

    def release(self) -> None:
        self._settle("release")


class CountingBreaker:
    """The route's breaker, its permits counted."""

    def __init__(self, breaker: Any, ledger: list[CountingPermit]) -> None:
        self._breaker = breaker
        self._ledger = ledger

    def try_acquire(self) -> CountingPermit | None:
        permit = self._breaker.try_acquire()
        return None if permit is None else CountingPermit(permit, self._ledger)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._breaker, name)


@dataclass
class Answer:
    status: int | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    complete: bool = False
    aborted: bool = False

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.decode().lower() == name.lower():
                return value.decode()
        return None


class Proxy:
    """ProxyApp over fake upstreams, its bulkheads and breakers counting."""

    def __init__(self, directory: Path, config_text: str, fake: FakeUpstreams, clock: FakeClock) -> None:
        path = directory / "routes.yaml"
        path.write_text(config_text)
        self.metrics = Metrics()
        self.holder = ConfigHolder(str(path), self.metrics, connector=fake, clock=clock)
        runtime = self.holder.reload()
        self.app = ProxyApp(self.holder, watch=False, health_checks=False)
        self.permits: list[CountingPermit] = []
        self.bulkheads: dict[str, CountingBulkhead] = {}
        for name, state in runtime.upstreams.items():
            state.bulkhead = self.bulkheads[name] = CountingBulkhead(state.bulkhead.max_concurrent)
        for route_rt in runtime.routes.values():
            for name in list(route_rt.breakers):
                route_rt.breakers[name] = CountingBreaker(route_rt.breakers[name], self.permits)  # type: ignore[assignment]

    async def request(self, method: str = "GET", path: str = "/x", body: bytes = b"", *,
                      headers: list[tuple[bytes, bytes]] | None = None,
                      gone_after_chunks: int | None = None) -> Answer:
        """One request; `gone_after_chunks`: the client goes away after that many body messages."""
        answer = Answer()
        gone = asyncio.Event()
        raw = [(b"host", b"shop.test"), *(headers or [])]
        if body:
            raw.append((b"content-length", b"%d" % len(body)))
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                 "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
                 "headers": raw, "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}
        sent_body = False
        body_messages = 0

        async def receive() -> dict[str, Any]:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal body_messages
            if message["type"] == "http.response.start":
                assert answer.status is None, "a second response head"
                answer.status, answer.headers = message["status"], list(message["headers"])
                return
            assert answer.status is not None and not answer.complete
            answer.body += message.get("body", b"")
            if not message.get("more_body", False):
                answer.complete = True
            else:
                body_messages += 1
                if gone_after_chunks is not None and body_messages >= gone_after_chunks:
                    gone.set()

        try:
            await self.app(scope, receive, send)
        except ResponseAborted:
            answer.aborted = True
        return answer

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def assert_everything_given_back(self) -> None:
        for name, bulkhead in self.bulkheads.items():
            assert bulkhead.in_flight == 0, f"{name}: {bulkhead.in_flight} slots still taken"
            assert bulkhead.acquired == bulkhead.released and bulkhead.over_released == 0, (
                f"{name}: {bulkhead.acquired} taken, {bulkhead.released} given back")
            assert self.sample("strangler_inflight_requests", upstream=name) == 0
        unsettled = [permit for permit in self.permits if permit.settled is None]
        assert not unsettled, f"{len(unsettled)} of {len(self.permits)} breaker permits never settled"


def config(*, fallback: bool = True, attempts: int = 2, timeout: str = "", failure_threshold: int = 5,
           max_concurrent: int = 8, upstream_timeout: str = "200ms") -> str:
    route_timeout = f"\n    timeout: {timeout}" if timeout else ""
    return f"""
version: 1
upstreams:
  new: {{url: "{NEW}", timeout: {upstream_timeout}, max_concurrent: {max_concurrent}}}
  legacy: {{url: "{LEGACY}", timeout: {upstream_timeout}}}
defaults:
  retry: {{attempts: {attempts}, backoff: {{initial: 1ms, max: 2ms}}, budget: 100%}}
  circuit_breaker: {{failure_threshold: {failure_threshold}, recovery_timeout: 30s, success_threshold: 1}}
routes:
  - name: orders
    match: {{path: /}}
    to: new{chr(10) + "    fallback: legacy" if fallback else ""}{route_timeout}
"""


async def outcome(task: asyncio.Future[Answer], cancel_after: int | None = None) -> Answer | None:
    """The request's answer; with `cancel_after`, it is cancelled after that many turns of the loop
    (on whichever await comes next), and None when the cancellation came first."""
    if cancel_after is not None:
        for _ in range(cancel_after):
            if task.done():
                break
            await asyncio.sleep(0)
        task.cancel()
    try:
        return await task
    except asyncio.CancelledError:
        return None


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.fixture
async def fake():
    async with FakeUpstreams() as upstreams:
        yield upstreams


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def proxy(tmp_path: Path, fake: FakeUpstreams, clock: FakeClock) -> Callable[..., Proxy]:
    return lambda **options: Proxy(tmp_path, config(**options), fake, clock)


# --- each stage, one case each ------------------------------------------------------------------------

async def test_a_get_is_routed_forwarded_streamed_and_recorded(proxy, fake):
    new = fake.upstream(NEW).script(Reply(200, [("Content-Type", "text/plain")], [b"hello ", b"world"]))
    p = proxy()
    answer = await p.request("GET", "/x")
    assert (answer.status, answer.body, answer.complete) == (200, b"hello world", True)
    assert answer.header("x-strangler-upstream") == "new"
    [seen] = new.requests
    assert seen.target == "/x" and seen.header("x-forwarded-for") == "127.0.0.1" and seen.header("via")
    assert p.sample("strangler_requests_total", route="orders", upstream="new", method="GET", code="200") == 1
    assert p.sample("strangler_upstream_attempts_total", route="orders", upstream="new", outcome="ok") == 1
    await settle()
    p.assert_everything_given_back()
    assert p.permits[0].settled == "record_success"


async def test_a_503_is_retried_on_the_same_upstream_and_the_retry_counted(proxy, fake):
    new = fake.upstream(NEW).script(Reply(503), Reply(200, body=b"second"))
    p = proxy()
    answer = await p.request()
    assert (answer.status, answer.body) == (200, b"second")
    assert len(new.requests) == 2
    assert p.sample("strangler_retries_total", route="orders", upstream="new") == 1
    assert [permit.settled for permit in p.permits] == ["record_failure", "record_success"]
    await settle()
    p.assert_everything_given_back()


async def test_a_refused_connection_goes_to_the_fallback(proxy, fake):
    fake.upstream(NEW).refuse()
    legacy = fake.upstream(LEGACY).script(Reply(200, body=b"from legacy"))
    p = proxy(attempts=1)
    answer = await p.request()
    assert (answer.status, answer.body, answer.header("x-strangler-upstream")) == (200, b"from legacy", "legacy")
    assert len(legacy.requests) == 1
    assert p.sample("strangler_fallbacks_total", route="orders", from_upstream="new", to_upstream="legacy",
                    reason="connect_error") == 1
    await settle()
    p.assert_everything_given_back()


async def test_the_breaker_opens_sends_to_the_fallback_and_half_opens_on_the_clock(proxy, fake, clock):
    new = fake.upstream(NEW).refuse(2)
    fake.upstream(LEGACY)
    p = proxy(attempts=1, failure_threshold=2)
    for _ in range(2):
        assert (await p.request()).header("x-strangler-upstream") == "legacy"
    answer = await p.request()            # open: the fallback takes it without touching new
    assert answer.header("x-strangler-upstream") == "legacy"
    assert p.sample("strangler_fallbacks_total", route="orders", from_upstream="new", to_upstream="legacy",
                    reason="circuit_open") == 1
    assert new.requests == []
    clock.now += 30.0                     # recovery_timeout: half-open, one trial reaches new
    answer = await p.request()
    assert answer.header("x-strangler-upstream") == "new" and len(new.requests) == 1
    assert p.sample("strangler_circuit_breaker_state", route="orders", upstream="new") == 0
    await settle()
    p.assert_everything_given_back()


async def test_a_full_bulkhead_refuses_at_once_with_503(proxy, fake):
    held = asyncio.Event()
    fake.upstream(NEW).script(Reply(200, body=b"slow", hold=held))
    p = proxy(fallback=False, max_concurrent=1, upstream_timeout="5s")
    first = asyncio.ensure_future(p.request())
    for _ in range(50):
        if p.bulkheads["new"].in_flight == 1:
            break
        await asyncio.sleep(0)
    second = await p.request()
    assert second.status == 503 and b"bulkhead_full" in second.body
    assert p.sample("strangler_bulkhead_rejections_total", upstream="new") == 1
    held.set()
    assert (await first).status == 200
    await settle()
    p.assert_everything_given_back()


async def test_a_client_gone_mid_body_settles_the_permit_as_neutral_and_drops_the_connection(proxy, fake):
    go_on, never = asyncio.Event(), asyncio.Event()
    new = fake.upstream(NEW).script(Reply(200, body=[b"a" * 10, go_on, b"b" * 10, never, b"c" * 10]))
    p = proxy()
    task = asyncio.ensure_future(p.request(gone_after_chunks=1))
    for _ in range(50):
        if new.requests:
            break
        await asyncio.sleep(0)
    await settle()
    go_on.set()
    answer = await task
    assert answer.status == 200 and not answer.complete
    await settle()
    assert [permit.settled for permit in p.permits] == ["release"]
    assert [(c.closed_by, c.aborted) for c in new.connections] == [("proxy", True)]
    p.assert_everything_given_back()


async def test_the_routes_deadline_is_504_and_gives_everything_back(proxy, fake):
    fake.upstream(NEW).script(HANG)
    p = proxy(fallback=False, attempts=1, timeout="30ms", upstream_timeout="5s")
    answer = await p.request()
    assert answer.status == 504
    await settle()
    p.assert_everything_given_back()
    assert [permit.settled for permit in p.permits] == ["record_failure"]


async def test_a_post_that_reached_the_upstream_is_never_sent_again(proxy, fake):
    new = fake.upstream(NEW).script(RESET)
    legacy = fake.upstream(LEGACY)
    p = proxy(attempts=3)
    answer = await p.request("POST", "/pay", b"amount=10")
    assert answer.status == 502 and b"upstream_reset" in answer.body
    assert len(new.requests) == 1 and legacy.requests == []
    await settle()
    p.assert_everything_given_back()


# --- whatever happens, everything is given back once (randomised) -------------------------------------------

STEPS = {
    "ok": Reply(200, body=b"ok"),
    "ok-in-pieces": Reply(200, body=[b"x" * 100, 0.0, b"y" * 100, 0.0, b"z" * 100]),
    "503": Reply(503, body=b"busy"),
    "reset": RESET,
    "garbage": GARBAGE,
    "hang": HANG,
    "cut-mid-body": Reply(200, body=[b"only part", 0.0], length=100, then=RESET),
}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    new_steps=st.lists(st.sampled_from(sorted(STEPS)), min_size=1, max_size=3),
    legacy_steps=st.lists(st.sampled_from(sorted(STEPS)), min_size=1, max_size=3),
    method=st.sampled_from(["GET", "POST"]),
    fallback=st.booleans(),
    attempts=st.integers(1, 3),
    client=st.sampled_from(["stays", "goes-mid-body", "cancelled"]),
    cancel_after=st.integers(0, 40),
)
def test_every_slot_and_permit_is_given_back_exactly_once(tmp_path, new_steps, legacy_steps, method, fallback,
                                                          attempts, client, cancel_after):
    async def scenario() -> None:
        async with FakeUpstreams() as fake:
            fake.upstream(NEW).script(*(STEPS[step] for step in new_steps))
            fake.upstream(LEGACY).script(*(STEPS[step] for step in legacy_steps))
            p = Proxy(tmp_path, config(fallback=fallback, attempts=attempts, timeout="150ms",
                                       upstream_timeout="40ms"), fake, FakeClock())
            task = asyncio.ensure_future(p.request(method, "/x", b"body" if method == "POST" else b"",
                                                   gone_after_chunks=1 if client == "goes-mid-body" else None))
            await outcome(task, cancel_after if client == "cancelled" else None)
            await settle()
            p.assert_everything_given_back()
            await p.holder.close()

    asyncio.run(scenario())

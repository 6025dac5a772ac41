"""The soak run: mixed load through `strangler run` while upstreams misbehave and the config reloads.

    make soak                      # 10 minutes, then the fuzz targets with a large budget
    SOAK_SECONDS=60 python -m soak # a short run

What runs (all on 127.0.0.1, all stopped at the end):
- two upstreams, `legacy` and `orders` (soak/upstream.py: real uvicorn servers in their own
  processes), each recording the id of every request it acts on;
- a Toxiproxy (tests/support/toxiproxy.py) in front of each, switching every few seconds
  between calm, latency, resets, bodies cut after N bytes, trickles, connections closed
  as they are reused, hangs and refused connections;
- the proxy, whose config is rewritten every few seconds (another split, reloaded by the
  file watcher, POST /reload or SIGHUP; now and then an invalid file that must be refused);
- SOAK_CONCURRENCY keep-alive clients (default 32) sending GET, POST (small and streamed),
  HEAD and pipelined requests, each with a unique X-Soak-Id, plus hostile requests
  (smuggling attempts, header and trailer sections that never end, slowloris) that must be
  refused and never reach an upstream;
- a prober polling the admin health endpoints;
- a ramp (soak/ramps.py) on a route of its own that advances under the load, is rolled back by a
  planted fault again and again, and, half way through, roll back all and its lift.

The report gives requests sent and answered, outcomes by class, the proxy's RSS at the
start (after a warm-up) and at the end, and what the upstreams recorded. It exits 1 when
a bound is broken: any 500; an answer carrying another request's id or a short body
presented as complete; a 2xx whose request no upstream recorded (lost); a POST recorded
twice (duplicated); a hostile request reaching an upstream; a request with no outcome
(hang); an admin health check failing; RSS growth of 20 MiB or more; an invalid config
taking effect; the proxy dying; in runs of 30 s or more, a ramp that never advanced or was
never rolled back.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from soak.ramps import RAMPED_PATH, RampDrill, route_text
from tests.support.metrics import scrape
from tests.support.servers import REPO, ProxyProcess, free_port, wait_until
from tests.support.toxiproxy import (
    CloseOnReuse, Latency, LimitData, ResetPeer, Slicer, Timeout, Toxic, Toxiproxy,
)

MiB = 1024 * 1024
RSS_GROWTH_LIMIT = 20 * MiB
CLIENT_TIMEOUT_S = 20.0
STREAMED_BODY = 200 * 1024          # over the proxy's 64 KiB replay buffer: streamed, never replayed


@dataclass(frozen=True)
class Settings:
    seconds: float = float(os.environ.get("SOAK_SECONDS", "600"))
    concurrency: int = int(os.environ.get("SOAK_CONCURRENCY", "32"))
    seed: int = int(os.environ.get("SOAK_SEED", str(int(time.time()))))

    @property
    def fault_period_s(self) -> float:
        return max(2.0, min(8.0, self.seconds / 15))

    @property
    def reload_period_s(self) -> float:
        return max(3.0, min(10.0, self.seconds / 12))

    @property
    def ramp_period_s(self) -> float:
        return max(1.0, min(5.0, self.seconds / 40))

    @property
    def warmup_s(self) -> float:
        return min(10.0, self.seconds * 0.15)


# -- what happened to each request --------------------------------------------------------------

@dataclass
class Outcome:
    soak_id: str
    method: str
    kind: str                 # get, post, post-streamed, head, pipelined, hostile, endless-section, slowloris
    klass: str                # what the client saw, see Report
    status: int | None = None
    body_length: int = 0      # for POSTs: bytes sent


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    sent: int = 0
    problems: list[str] = field(default_factory=list)
    admin_checks: int = 0
    admin_failures: list[str] = field(default_factory=list)
    reloads: Counter = field(default_factory=Counter)
    faults: Counter = field(default_factory=Counter)
    ramps: Counter = field(default_factory=Counter)

    def add(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)


# -- the wire -----------------------------------------------------------------------------------

class Aborted(Exception):
    """The connection ended inside a response (or before any byte of one)."""

    def __init__(self, status: int | None) -> None:
        super().__init__(status)
        self.status = status


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    close: bool


async def read_answer(reader: asyncio.StreamReader, *, head_only: bool) -> Answer:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        raise Aborted(None) from None
    lines = head[:-4].decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    close = "close" in headers.get("connection", "").lower()
    if status == 100:
        return Answer(status, headers, b"", close)
    try:
        if head_only or status in (204, 304):
            body = b""
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
            body = b"".join(parts)
        elif "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        else:
            body = await reader.read()
            close = True
    except (asyncio.IncompleteReadError, ConnectionError, ValueError, asyncio.LimitOverrunError):
        raise Aborted(status) from None
    return Answer(status, headers, body, close)


class Connection:
    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, data: bytes, *, head_only: bool = False) -> Answer:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)
        assert self.reader is not None
        try:
            self.writer.write(data)
            await self.writer.drain()
        except ConnectionError:
            self.close()
            raise Aborted(None) from None
        try:
            answer = await read_answer(self.reader, head_only=head_only)
        except Aborted:
            self.close()
            raise
        if answer.close:
            self.close()
        return answer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _classify(answer: Answer) -> str:
    if 200 <= answer.status < 300:
        return "2xx"
    if answer.status >= 500:
        if not answer.body:
            return f"{answer.status} (HEAD, no body)"
        try:
            reason = json.loads(answer.body).get("reason", "?")
        except ValueError:
            reason = "upstream's own"
        return f"{answer.status} {reason}"
    return f"{answer.status}"


# -- the load -----------------------------------------------------------------------------------

HOSTILE = [
    b"POST /api/orders/{id} HTTP/1.1\r\nHost: soak\r\nX-Soak-Id: {id}\r\nContent-Length: 6\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled/{id} HTTP/1.1\r\nHost: soak\r\n\r\n",
    b"POST /shop/{id} HTTP/1.1\r\nHost: soak\r\nX-Soak-Id: {id}\r\nTransfer-Encoding: ,chunked\r\n\r\n0\r\n\r\n",
    b"POST /shop/{id} HTTP/1.1\r\nHost: soak\r\nX-Soak-Id: {id}\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabc",
    b"GET http://evil.test/shop/{id} HTTP/1.1\r\nHost: soak\r\nX-Soak-Id: {id}\r\n\r\n",
    b"GET /shop/{id} HTTP/1.1\r\nHost: soak\r\nHost: admin.internal\r\nX-Soak-Id: {id}\r\n\r\n",
    b"GET /shop/{id} HTTP/1.1\r\nHost: soak\r\nX-Soak-Id: {id}\r\nX-Folded: a\r\n b\r\n\r\n",
    b"GET /shop/{id} HTTP/1.1\r\nHost: soak\r\nX-Soak-Id: {id}\r\nX-Bad: \xff\xfe\r\n\r\n",
    b"POST /shop/{id} HTTP/1.1\r\nHost: soak\r\nX-Soak-Id: {id}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhi\r\n0\r\n\r\n",
]

# Unfinished sections: the rest of the field follows as `a` without end (_push_endlessly).
ENDLESS = [
    ("header", b"GET /shop/{id} HTTP/1.1\r\nHost: soak\r\nX-Soak-Id: {id}\r\nX-Big: "),
    ("trailer", b"POST /shop/{id} HTTP/1.1\r\nHost: soak\r\nX-Soak-Id: {id}\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"1\r\na\r\n0\r\nX-T: "),
]
# Well past the limit (73 KiB by default), and short enough to be read away by the proxy's lingering
# close: a client still sending when that ends gets a reset, which can destroy the refusal unread.
ENDLESS_BUDGET_BYTES = 512 * 1024


def _endless_refusal(section: str, status: int) -> str:
    """An endless header can only be refused as too large or too slow; a request whose body is on its way
    may also be refused for the route's own reasons (breaker open, upstream reset) before its trailer ends."""
    if status in (431, 408) or (section == "trailer" and status >= 400):
        return f"refused {status}"
    return f"endless section answered {status}"


async def _push_endlessly(writer: asyncio.StreamWriter) -> None:
    piece = b"a" * 16384
    try:
        for _ in range(ENDLESS_BUDGET_BYTES // len(piece)):
            writer.write(piece)
            await writer.drain()
    except (OSError, ConnectionError):
        pass


class Load:
    def __init__(self, settings: Settings, proxy: ProxyProcess, report: Report) -> None:
        self.settings, self.proxy, self.report = settings, proxy, report
        self.random = random.Random(settings.seed)
        self.counter = 0
        self.run_id = f"{settings.seed:x}"

    def next_id(self) -> str:
        self.counter += 1
        self.report.sent += 1
        return f"{self.run_id}-{self.counter}"

    async def client(self, until: float) -> None:
        connection = Connection(self.proxy.port)
        try:
            while time.monotonic() < until:
                roll = self.random.random()
                if roll < 0.30:
                    await self.get(connection, f"/api/orders/{self.random.randrange(1000)}")
                elif roll < 0.40:
                    await self.get(connection, f"{RAMPED_PATH}/{self.random.randrange(1000)}")
                elif roll < 0.60:
                    await self.post(connection, streamed=self.random.random() < 0.08)
                elif roll < 0.85:
                    await self.get(connection, f"/shop/{self.random.randrange(1000)}")
                elif roll < 0.90:
                    await self.head(connection)
                elif roll < 0.95:
                    await self.pipelined()
                elif roll < 0.985:
                    await self.hostile()
                elif roll < 0.993:
                    await self.endless_section()
                else:
                    await self.slowloris()
        finally:
            connection.close()

    async def _exchange(self, connection: Connection, outcome: Outcome, data: bytes, *,
                        head_only: bool = False) -> Answer | None:
        try:
            answer = await asyncio.wait_for(connection.send(data, head_only=head_only), CLIENT_TIMEOUT_S)
        except Aborted as aborted:
            outcome.klass, outcome.status = ("aborted" if aborted.status else "no-answer"), aborted.status
            return None
        except (TimeoutError, asyncio.TimeoutError):
            connection.close()
            outcome.klass = "client-timeout"
            return None
        outcome.status, outcome.klass = answer.status, _classify(answer)
        return answer

    def _check_echo(self, outcome: Outcome, answer: Answer | None, *, sent_body: int | None = None) -> None:
        if answer is None or not 200 <= answer.status < 300:
            return
        if answer.headers.get("x-echo-id") != outcome.soak_id:
            outcome.klass = "crossed"
            self.report.problems.append(f"{outcome.soak_id}: answered with {answer.headers.get('x-echo-id')}'s answer")
        elif outcome.method != "HEAD":
            expected = f"id={outcome.soak_id} got={sent_body or 0}".encode()
            if not answer.body.startswith(expected):
                outcome.klass = "crossed"
                self.report.problems.append(f"{outcome.soak_id}: body {answer.body[:60]!r}, expected {expected!r}")

    async def get(self, connection: Connection, path: str) -> None:
        soak_id = self.next_id()
        outcome = Outcome(soak_id, "GET", "get", "?")
        size = self.random.choice([0, 0, 100, 2000, 30_000])
        user = self.random.randrange(200)
        data = (f"GET {path}?size={size} HTTP/1.1\r\nHost: soak\r\nX-Soak-Id: {soak_id}\r\n"
                f"X-User: u{user}\r\n\r\n").encode()
        answer = await self._exchange(connection, outcome, data)
        if answer is not None and answer.status == 200 and len(answer.body) < size:
            outcome.klass = "crossed"
            self.report.problems.append(f"{soak_id}: a {len(answer.body)}-byte body for {size} bytes, as complete")
        self._check_echo(outcome, answer)
        self.report.add(outcome)

    async def post(self, connection: Connection, *, streamed: bool) -> None:
        soak_id = self.next_id()
        length = STREAMED_BODY if streamed else self.random.randrange(1, 4000)
        outcome = Outcome(soak_id, "POST", "post-streamed" if streamed else "post", "?", body_length=length)
        head = (f"POST /api/orders HTTP/1.1\r\nHost: soak\r\nX-Soak-Id: {soak_id}\r\nX-User: u{self.random.randrange(200)}"
                f"\r\nContent-Length: {length}\r\n\r\n").encode()
        answer = await self._exchange(connection, outcome, head + self.random.randbytes(length))
        self._check_echo(outcome, answer, sent_body=length)
        self.report.add(outcome)

    async def head(self, connection: Connection) -> None:
        soak_id = self.next_id()
        outcome = Outcome(soak_id, "HEAD", "head", "?")
        data = f"HEAD /shop/h HTTP/1.1\r\nHost: soak\r\nX-Soak-Id: {soak_id}\r\n\r\n".encode()
        answer = await self._exchange(connection, outcome, data, head_only=True)
        self._check_echo(outcome, answer)
        self.report.add(outcome)

    async def pipelined(self) -> None:
        """Two routes in one write on a new connection: answers in order, each its own."""
        ids = [self.next_id(), self.next_id()]
        paths = ["/api/orders/p", "/shop/p"]
        self.random.shuffle(paths)
        data = b"".join(f"GET {path} HTTP/1.1\r\nHost: soak\r\nX-Soak-Id: {soak_id}\r\nX-User: u1\r\n\r\n".encode()
                        for path, soak_id in zip(paths, ids))
        connection = Connection(self.proxy.port)
        try:
            connection.reader, connection.writer = await asyncio.open_connection("127.0.0.1", self.proxy.port)
            connection.writer.write(data)
            for soak_id in ids:
                outcome = Outcome(soak_id, "GET", "pipelined", "?")
                try:
                    answer = await asyncio.wait_for(read_answer(connection.reader, head_only=False), CLIENT_TIMEOUT_S)
                except Aborted as aborted:
                    outcome.klass, outcome.status = ("aborted" if aborted.status else "no-answer"), aborted.status
                    self.report.add(outcome)
                    for rest in ids[ids.index(soak_id) + 1:]:
                        self.report.add(Outcome(rest, "GET", "pipelined", "aborted-behind"))
                    break
                except (TimeoutError, asyncio.TimeoutError):
                    outcome.klass = "client-timeout"
                    self.report.add(outcome)
                    break
                outcome.status, outcome.klass = answer.status, _classify(answer)
                self._check_echo(outcome, answer)
                self.report.add(outcome)
                if answer.close:
                    for rest in ids[ids.index(soak_id) + 1:]:
                        self.report.add(Outcome(rest, "GET", "pipelined", "closed-behind"))
                    break
        except OSError:
            pass
        finally:
            connection.close()

    async def hostile(self) -> None:
        soak_id = self.next_id()
        outcome = Outcome(soak_id, "HOSTILE", "hostile", "?")
        payload = self.random.choice(HOSTILE).replace(b"{id}", soak_id.encode())
        connection = Connection(self.proxy.port)
        answer = await self._exchange(connection, outcome, payload)
        if answer is not None:
            outcome.klass = "refused 400" if answer.status == 400 and answer.close else f"hostile answered {answer.status}"
        connection.close()
        self.report.add(outcome)

    async def _open_hostile(self, outcome: Outcome) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """A connection of its own for a hostile client; None (and the outcome recorded) when refused."""
        try:
            return await asyncio.open_connection("127.0.0.1", self.proxy.port)
        except OSError:
            outcome.klass = "no-answer"
            self.report.add(outcome)
            return None

    async def endless_section(self) -> None:
        """A header or trailer that never ends, pushed until the proxy refuses it (431) or hangs up."""
        soak_id = self.next_id()
        outcome = Outcome(soak_id, "HOSTILE", "endless-section", "?")
        section, start = self.random.choice(ENDLESS)
        start = start.replace(b"{id}", soak_id.encode())
        opened = await self._open_hostile(outcome)
        if opened is None:
            return
        reader, writer = opened
        pusher: asyncio.Task[None] | None = None
        try:
            writer.write(start)
            pusher = asyncio.ensure_future(_push_endlessly(writer))
            try:
                answer = await asyncio.wait_for(read_answer(reader, head_only=False), CLIENT_TIMEOUT_S)
                outcome.status = answer.status
                outcome.klass = _endless_refusal(section, answer.status)
            except Aborted as aborted:
                outcome.status = aborted.status
                outcome.klass = "no-answer" if aborted.status is None else _endless_refusal(section, aborted.status)
            except (TimeoutError, asyncio.TimeoutError):
                outcome.klass = "client-timeout"
        finally:
            if pusher is not None:
                pusher.cancel()
            writer.close()
        self.report.add(outcome)

    async def slowloris(self) -> None:
        """Headers trickled slower than header_timeout: a 408, and the connection closed."""
        soak_id = self.next_id()
        outcome = Outcome(soak_id, "HOSTILE", "slowloris", "?")
        opened = await self._open_hostile(outcome)
        if opened is None:
            return
        reader, writer = opened
        try:
            writer.write(f"GET /shop/{soak_id} HTTP/1.1\r\nHost: soak\r\nX-Soak-Id: {soak_id}\r\n".encode())
            try:
                answer = await asyncio.wait_for(read_answer(reader, head_only=False), CLIENT_TIMEOUT_S)
                outcome.status = answer.status
                outcome.klass = "refused 408" if answer.status == 408 else f"slowloris answered {answer.status}"
            except Aborted:
                outcome.klass = "no-answer"
            except (TimeoutError, asyncio.TimeoutError):
                outcome.klass = "client-timeout"
        finally:
            writer.close()
        self.report.add(outcome)


# -- faults, reloads, admin probe -----------------------------------------------------------------

def _scenarios(rng: random.Random) -> list[tuple[str, list[Toxic]]]:
    return [
        ("calm", []),
        ("latency", [Latency(seconds=0.02, jitter=0.08)]),
        ("resets", [ResetPeer(stream="downstream", toxicity=0.05)]),
        ("cut-bodies", [LimitData(stream="downstream", bytes=rng.choice([200, 3000, 20_000]), toxicity=0.1)]),
        ("trickle", [Slicer(size=700, delay=0.001, variation=300)]),
        ("close-on-reuse", [CloseOnReuse(toxicity=0.2)]),
        ("hangs", [Timeout(stream="downstream", toxicity=0.03)]),
        ("refused", []),
    ]


class Faults(threading.Thread):
    def __init__(self, settings: Settings, toxiproxies: list[Toxiproxy], report: Report, stop: threading.Event) -> None:
        super().__init__(daemon=True, name="soak-faults")
        self.settings, self.toxiproxies, self.report, self.stop_event = settings, toxiproxies, report, stop
        self.random = random.Random(settings.seed + 1)

    def run(self) -> None:
        while not self.stop_event.is_set():
            for toxiproxy in self.toxiproxies:
                toxiproxy.clear()
                if not toxiproxy.enabled:
                    toxiproxy.enable()
                name, toxics = self.random.choice(_scenarios(self.random))
                self.report.faults[f"{toxiproxy.name}:{name}"] += 1
                if name == "refused":
                    toxiproxy.disable()
                for toxic in toxics:
                    toxiproxy.add(toxic)
            if self.stop_event.wait(self.settings.fault_period_s):
                break
        self.heal()

    def heal(self) -> None:
        for toxiproxy in self.toxiproxies:
            toxiproxy.clear()
            if not toxiproxy.enabled:
                toxiproxy.enable()


def config_text(legacy_url: str, orders_url: str, orders_percent: int, *, broken: bool = False,
                ramp_every_s: float = Settings().ramp_period_s) -> str:
    split = f"{{orders: {orders_percent}, legacy: {100 - orders_percent - (10 if broken else 0)}}}"
    return f"""\
version: 1
upstreams:
  legacy: {{url: "{legacy_url}", timeout: 2s, connect_timeout: 1s, max_concurrent: 400, role: legacy}}
  orders: {{url: "{orders_url}", timeout: 2s, connect_timeout: 1s, max_concurrent: 200}}
defaults:
  retry: {{attempts: 3, backoff: {{initial: 20ms, max: 200ms}}}}
  circuit_breaker: {{failure_threshold: 20, recovery_timeout: 2s, success_threshold: 2}}
limits: {{header_timeout: 2s, body_idle_timeout: 2s, max_concurrent_requests: 2000}}
access_log: {{enabled: true}}
routes:
  - name: orders
    match: {{path: /api/orders}}
    split: {split}
    fallback: legacy
    sticky: header:X-User
    timeout: 5s
{route_text(ramp_every_s)}  - name: shop
    match: {{path: /}}
    to: legacy
"""


class Reloads(threading.Thread):
    """Rewrites the config (another split) every few seconds, reloaded in turn by the file watcher,
    POST /reload and SIGHUP; every fifth time an invalid file, which must be refused."""

    def __init__(self, settings: Settings, proxy: ProxyProcess, urls: tuple[str, str], report: Report,
                 stop: threading.Event) -> None:
        super().__init__(daemon=True, name="soak-reloads")
        self.settings, self.proxy, self.urls, self.report, self.stop_event = settings, proxy, urls, report, stop
        self.random = random.Random(settings.seed + 2)

    def _version(self) -> str:
        return httpx.get(self.proxy.admin_url + "/routes", timeout=5).json()["version"]

    def _write(self, text: str) -> None:
        path = self.proxy.config_path
        temporary = path.with_suffix(".tmp")
        temporary.write_text(text)
        os.replace(temporary, path)

    def run(self) -> None:
        count = 0
        while not self.stop_event.wait(self.settings.reload_period_s):
            count += 1
            try:
                if count % 5 == 0:
                    self._invalid()
                    continue
                percent = self.random.randrange(0, 101, 5)
                text = config_text(*self.urls, percent)
                self._write(text)
                how = ("watch", "post", "sighup")[count % 3]
                if how == "post":
                    httpx.post(self.proxy.admin_url + "/reload", timeout=10)
                elif how == "sighup":
                    os.kill(self.proxy.pid, signal.SIGHUP)
                expected = hashlib.sha256(text.encode()).hexdigest()
                wait_until(lambda: self._version() == expected, timeout_s=5, what=f"reload by {how}")
                self.report.reloads[how] += 1
            except (AssertionError, httpx.HTTPError, OSError) as error:
                self.report.problems.append(f"reload {count}: {error}")

    def _invalid(self) -> None:
        before = self._version()
        failures = scrape(self.proxy.admin_url).value("strangler_config_reloads_total", result="failure")
        valid = self.proxy.config_path.read_text()
        self._write(config_text(*self.urls, 50, broken=True))
        response = httpx.post(self.proxy.admin_url + "/reload", timeout=10)
        if response.status_code != 422:
            self.report.problems.append(f"an invalid config was answered {response.status_code}, not 422")
        if self._version() != before:
            self.report.problems.append("an invalid config replaced the running one")
        if scrape(self.proxy.admin_url).value("strangler_config_reloads_total", result="failure") <= failures:
            self.report.problems.append("an invalid config was not counted as a failed reload")
        if httpx.get(self.proxy.admin_url + "/health/ready", timeout=5).status_code != 200:
            self.report.problems.append("not ready while an invalid config was on disk")
        self._write(valid)
        self.report.reloads["invalid refused"] += 1


class AdminProbe(threading.Thread):
    def __init__(self, proxy: ProxyProcess, report: Report, stop: threading.Event) -> None:
        super().__init__(daemon=True, name="soak-admin")
        self.proxy, self.report, self.stop_event = proxy, report, stop

    def run(self) -> None:
        with httpx.Client(base_url=self.proxy.admin_url, timeout=5) as client:
            while not self.stop_event.wait(1.0):
                for path in ("/health/live", "/health/ready"):
                    self.report.admin_checks += 1
                    try:
                        status = client.get(path).status_code
                        if status != 200:
                            self.report.admin_failures.append(f"{path}: {status}")
                    except httpx.HTTPError as error:
                        self.report.admin_failures.append(f"{path}: {error!r}")


# -- the run --------------------------------------------------------------------------------------

class Upstream:
    """soak/upstream.py in a process of its own."""

    def __init__(self, name: str, directory: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(directory / f"{name}.log", "wb")
        self.process = subprocess.Popen([sys.executable, "-m", "soak.upstream", str(self.port)], cwd=REPO,
                                        stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(self._ready, timeout_s=20, what=f"upstream {name}")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"upstream {self.name} exited with {self.process.returncode}")
        try:
            return httpx.get(self.url + "/__health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def ids(self) -> dict[str, dict[str, int]]:
        return httpx.get(self.url + "/__ids", timeout=30).json()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._log.close()


def main() -> int:
    settings = Settings()
    report = Report()
    directory = Path(tempfile.mkdtemp(prefix="strangler-soak-"))
    print(f"soak: {settings.seconds:g}s, {settings.concurrency} clients, seed {settings.seed}, logs in {directory}",
          flush=True)
    started: list[object] = []
    stop = threading.Event()
    try:
        legacy, orders = Upstream("legacy", directory), Upstream("orders", directory)
        started += [legacy, orders]
        toxiproxies = [Toxiproxy(legacy.port, name="legacy", seed=settings.seed).start(),
                       Toxiproxy(orders.port, name="orders", seed=settings.seed + 1).start()]
        started += toxiproxies
        urls = (toxiproxies[0].url, toxiproxies[1].url)
        config_path = directory / "routes.yaml"
        config_path.write_text(config_text(*urls, 25))
        proxy = ProxyProcess(config_path).start()
        started.append(proxy)

        load = Load(settings, proxy, report)
        threads = [Faults(settings, toxiproxies, report, stop), Reloads(settings, proxy, urls, report, stop),
                   AdminProbe(proxy, report, stop),
                   RampDrill(proxy.admin_url, orders.url, settings.seconds, settings.ramp_period_s, report.ramps,
                             report.problems, stop)]
        rss: dict[str, int] = {"first": proxy.rss_bytes()}

        async def drive() -> None:
            begin = time.monotonic()
            until = begin + settings.seconds
            clients = [asyncio.ensure_future(load.client(until)) for _ in range(settings.concurrency)]
            for thread in threads:
                thread.start()
            await asyncio.sleep(settings.warmup_s)         # the warm-up is part of the load, not a wait for it
            rss["start"] = proxy.rss_bytes()
            print(f"soak: warmed up after {settings.warmup_s:g}s, RSS {rss['start'] / MiB:.1f} MiB", flush=True)
            last = time.monotonic()
            while not all(client.done() for client in clients):
                await asyncio.wait(clients, timeout=10)
                if time.monotonic() - last >= 30:
                    last = time.monotonic()
                    print(f"soak: {time.monotonic() - begin:.0f}s, {report.sent} sent, "
                          f"RSS {proxy.rss_bytes() / MiB:.1f} MiB", flush=True)
            for client in clients:
                client.result()

        asyncio.run(drive())
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        threads[0].heal()                                  # type: ignore[attr-defined]
        # Drain: nothing in flight, then read what the upstreams recorded.
        wait_until(lambda: scrape(proxy.admin_url).value("strangler_inflight_requests") == 0, timeout_s=30,
                   what="requests in flight to finish")
        rss["end"] = proxy.rss_bytes()
        alive = proxy.process is not None and proxy.process.poll() is None
        recorded = [legacy.ids(), orders.ids()]
        return _judge(settings, report, rss, recorded, alive, proxy)
    finally:
        stop.set()
        for thing in reversed(started):
            if isinstance(thing, ProxyProcess):
                thing.terminate()
            else:
                thing.stop()                              # type: ignore[attr-defined]


def _judge(settings: Settings, report: Report, rss: dict[str, int], recorded: list[dict[str, dict[str, int]]],
           alive: bool, proxy: ProxyProcess) -> int:
    seen: dict[str, Counter] = {}
    request_ids: dict[str, list[str]] = {}
    for upstream in recorded:
        for soak_id, rids in upstream.pop("POST_REQUEST_IDS", {}).items():
            request_ids.setdefault(soak_id, []).extend(rids)
        for method, ids in upstream.items():
            seen.setdefault(method, Counter()).update(ids)
    outcomes = report.outcomes
    classes = Counter(outcome.klass for outcome in outcomes)
    kinds = Counter(outcome.kind for outcome in outcomes)
    answered = sum(1 for outcome in outcomes if outcome.status is not None)
    lost = [o.soak_id for o in outcomes if o.klass == "2xx" and seen.get(o.method, Counter())[o.soak_id] == 0]
    duplicated = [o.soak_id for o in outcomes if o.method == "POST" and seen.get("POST", Counter())[o.soak_id] > 1]
    replayed_gets = sum(1 for o in outcomes if o.method == "GET" and seen.get("GET", Counter())[o.soak_id] > 1)
    hostile_ids = {o.soak_id for o in outcomes if o.method == "HOSTILE"}
    hostile_reached = [soak_id for method in seen.values() for soak_id in method if soak_id in hostile_ids]
    ambiguous = sum(1 for o in outcomes if o.method == "POST" and o.klass != "2xx" and seen.get("POST", Counter())[o.soak_id])
    known_ids = {o.soak_id for o in outcomes}
    unknown = [soak_id for method in seen.values() for soak_id in method if soak_id not in known_ids]
    growth = rss["end"] - rss["start"]
    log = proxy.log()

    bounds = {
        "no 500s": not any(o.status == 500 for o in outcomes),
        "no crossed or short answers": classes["crossed"] == 0,
        "no lost requests (2xx not recorded upstream)": not lost,
        "no duplicated POSTs": not duplicated,
        "no hostile request reached an upstream": not hostile_reached,
        "hostile requests refused (4xx/5xx)": all(o.klass.startswith("refused ")
                                                  for o in outcomes if o.method == "HOSTILE"),
        "every request has an outcome (no hangs, no silent closes)":
            len(outcomes) == report.sent and classes["client-timeout"] == 0 and classes["no-answer"] == 0,
        "no request recorded that was never sent": not unknown,
        "admin health answered throughout": not report.admin_failures and report.admin_checks > 0,
        f"RSS growth under {RSS_GROWTH_LIMIT // MiB} MiB": growth < RSS_GROWTH_LIMIT,
        "reloads, invalid configs and the ramp drill behaved": not report.problems,
        "the ramp advanced and was rolled back, roll back all held and lifted": settings.seconds < 30 or (
            report.ramps["advance"] > 0 and report.ramps["rollback"] > 0 and report.ramps["lifted"] > 0),
        "proxy alive, no traceback in its log": alive and "Traceback" not in log,
    }
    print()
    print(f"requests sent        {report.sent}   ({report.sent / settings.seconds:.0f}/s)")
    print(f"answered             {answered}   (a status line received; the rest were aborted or refused as shown)")
    print("by kind              " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    print("outcomes by class")
    for klass, count in classes.most_common():
        print(f"  {klass:<36} {count}")
    print(f"upstreams recorded   {sum(sum(c.values()) for c in seen.values())} actions on "
          f"{len({i for c in seen.values() for i in c})} ids; GETs replayed by retries {replayed_gets}; "
          f"POSTs failed at the client but applied upstream {ambiguous}")
    print(f"lost {len(lost)}, duplicated {len(duplicated)}, hostile reaching upstream {len(hostile_reached)}, "
          f"crossed {classes['crossed']}")
    print(f"RSS                  first {rss['first'] / MiB:.1f} MiB, start (after warm-up) {rss['start'] / MiB:.1f} MiB, "
          f"end {rss['end'] / MiB:.1f} MiB, growth {growth / MiB:+.1f} MiB")
    print(f"admin health checks  {report.admin_checks}, failures {len(report.admin_failures)}")
    print("reloads              " + ", ".join(f"{k} {v}" for k, v in sorted(report.reloads.items())))
    print("fault periods        " + ", ".join(f"{k} {v}" for k, v in sorted(report.faults.items())))
    print("ramp                 " + ", ".join(f"{k} {v}" for k, v in sorted(report.ramps.items())))
    for problem in report.problems[:20]:
        print(f"  problem: {problem}")
    for name, soak_id in [("lost", i) for i in lost[:5]] + [("duplicated", i) for i in duplicated[:5]]:
        detail = f" (X-Request-IDs upstream: {', '.join(request_ids.get(soak_id, []))})" if name == "duplicated" else ""
        print(f"  {name}: {soak_id}{detail}")
    print()
    for bound, held in bounds.items():
        print(f"  [{'ok' if held else 'BROKEN'}] {bound}")
    broken = [bound for bound, held in bounds.items() if not held]
    print(f"\nsoak: {'FAILED: ' + '; '.join(broken) if broken else 'passed'}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())

"""Generated load for the demo: visitors reading orders through the proxy, and who answered them, each second.

    python -m playground.load [--url http://127.0.0.1:8000] [--rate 60] [--visitors 300] [--seconds N]

Each visitor keeps the `strangler_cohort` cookie the proxy gives it, as a browser
would, so it stays on its side until a ramp step moves its bucket. Every second
prints requests per upstream and the answers that were not 2xx; Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import http.client
import random
import sys
import threading
import time
from collections import Counter
from urllib.parse import urlsplit

PATHS = ["/api/orders/"] + [f"/api/orders/{order_id}/" for order_id in range(1, 6)]
THREADS = 8


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.upstreams: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()

    def add(self, upstream: str, status: int) -> None:
        with self.lock:
            self.upstreams[upstream] += 1
            if status >= 300:
                self.failures[f"{status} from {upstream}"] += 1

    def take(self) -> tuple[Counter[str], Counter[str]]:
        with self.lock:
            taken = self.upstreams, self.failures
            self.upstreams, self.failures = Counter(), Counter()
        return taken


def _visit(url: str, cookies: dict[int, str], visitors: int, interval_s: float, tally: Tally,
           stop: threading.Event) -> None:
    origin = urlsplit(url)
    connection = http.client.HTTPConnection(origin.hostname or "127.0.0.1", origin.port or 80, timeout=10)
    rng = random.Random()
    next_at = time.monotonic()
    while not stop.is_set():
        visitor = rng.randrange(visitors)
        headers = {"Cookie": cookies[visitor]} if visitor in cookies else {}
        try:
            connection.request("GET", rng.choice(PATHS), headers=headers)
            response = connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            tally.add("(no answer)", 599)
            connection.close()
        else:
            cookie = response.getheader("Set-Cookie", "")
            if cookie.startswith("strangler_cohort="):
                cookies[visitor] = cookie.split(";", 1)[0]
            tally.add(response.getheader("X-Strangler-Upstream", "-"), response.status)
        next_at += interval_s
        stop.wait(max(0.0, next_at - time.monotonic()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m playground.load", description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the proxy")
    parser.add_argument("--rate", type=float, default=60.0, help="requests per second, all visitors together")
    parser.add_argument("--visitors", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=0.0, help="stop after this long (default: Ctrl-C)")
    args = parser.parse_args(argv)
    tally, stop, cookies = Tally(), threading.Event(), {}
    for _ in range(THREADS):
        threading.Thread(target=_visit, args=(args.url, cookies, args.visitors, THREADS / args.rate, tally, stop),
                         daemon=True).start()
    started = time.monotonic()
    try:
        while not stop.wait(1.0):
            upstreams, failures = tally.take()
            total = sum(upstreams.values()) or 1
            shares = "  ".join(f"{name} {count} ({100 * count / total:.0f}%)"
                               for name, count in sorted(upstreams.items()))
            problems = ("   not 2xx: " + ", ".join(f"{n} x {what}" for what, n in failures.items())) if failures else ""
            print(f"{time.strftime('%H:%M:%S')}  {shares}{problems}", flush=True)
            if args.seconds and time.monotonic() - started >= args.seconds:
                break
    except KeyboardInterrupt:
        pass
    stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())

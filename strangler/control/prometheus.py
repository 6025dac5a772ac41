"""Gate figures from Prometheus: the traffic of every proxy instance together, read with PromQL.

A window of one route is read at `now` over a range as long as the window, but
never shorter than 4 scrape intervals (a rate() over fewer samples returns
nothing). Counts per upstream are

    sum by (upstream) ((increase(C[R]) and C offset R) or C)

increase() for the series that existed when the window began (it sees through
counter resets, such as an instance that restarted), and the whole value of the
series born inside the window (a new instance, a status code seen for the first
time), whose first count increase() alone would miss. p95 is
histogram_quantile over the buckets summed across instances by (le, upstream).

Prometheus unreachable, an error, or no request series for the route at all:
FiguresUnreadable, so the step is inconclusive; never a breach, never a pass.
"""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from typing import Any

from .fetch import FetchError, JsonClient
from .figures import FiguresUnreadable, RouteWindow, UpstreamWindow

MIN_SCRAPES_PER_RANGE = 4
TIMEOUT_S = 5.0
_COMPARED = ("match", "mismatch", "noise")
_MATCHED = ("match", "noise")


def _selector(metric: str, route: str, **matchers: str) -> str:
    labels = [f'route="{_quoted(route)}"', *(f'{name}{value}' for name, value in matchers.items())]
    return f"{metric}{{{','.join(labels)}}}"


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _count(selector: str, by: str, range_s: int) -> str:
    return f"sum by ({by}) ((increase({selector}[{range_s}s]) and {selector} offset {range_s}s) or {selector})"


def queries(route: str, range_s: int) -> dict[str, str]:
    """The PromQL that reads one route's window, by what it reads."""
    requests = _selector("strangler_requests_total", route)
    return {
        "requests": _count(requests, "upstream", range_s),
        "errors": _count(_selector("strangler_requests_total", route, code='=~"5.."'), "upstream", range_s),
        "p95_s": "histogram_quantile(0.95, sum by (le, upstream) "
                 f"(rate({_selector('strangler_request_duration_seconds_bucket', route)}[{range_s}s])))",
        "diverted": _count(_selector("strangler_fallbacks_total", route), "from_upstream", range_s),
        "breaker_opened": _count(_selector("strangler_circuit_breaker_transitions_total", route, to='="open"'),
                                 "upstream", range_s),
        "shadow": _count(_selector("strangler_shadow_requests_total", route), "result", range_s),
    }


class PrometheusFigures:
    """GateFigures read from a Prometheus that scrapes every proxy instance."""

    def __init__(self, url: str, *, scrape_interval_s: float = 15.0, timeout_s: float = TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self.scrape_interval_s = scrape_interval_s
        self._client: JsonClient | None = None
        self._timeout_s = timeout_s

    def range_s(self, started_at: float, now: float) -> int:
        return max(math.ceil(now - started_at), math.ceil(MIN_SCRAPES_PER_RANGE * self.scrape_interval_s))

    def begin_window(self, route: str, started_at: float) -> None:
        pass        # Prometheus keeps the history: a window is a range, read when it is judged

    def describe(self, route: str, started_at: float, now: float) -> dict[str, Any]:
        range_s = self.range_s(started_at, now)
        return {"source": "prometheus", "url": self.url, "scrape_interval_s": self.scrape_interval_s,
                "range_s": range_s, "promql": queries(route, range_s)}

    async def read_window(self, route: str, started_at: float, now: float) -> RouteWindow:
        range_s = self.range_s(started_at, now)
        wanted = queries(route, range_s)
        if self._client is None:
            self._client = JsonClient(self.url, timeout_s=self._timeout_s)
        try:
            answers = await asyncio.gather(*(self._query(promql, now) for promql in wanted.values()))
        except FetchError as error:
            raise FiguresUnreadable(f"Prometheus: {error}") from None
        found = dict(zip(wanted, answers))
        if not found["requests"]:
            raise FiguresUnreadable(f"no data: Prometheus at {self.url} has no strangler_requests_total for route "
                                    f"{route!r} over the last {range_s}s (does it scrape every instance?)")
        requests, errors = _by(found["requests"], "upstream"), _by(found["errors"], "upstream")
        p95, diverted = _by(found["p95_s"], "upstream"), _by(found["diverted"], "from_upstream")
        opened, shadow = _by(found["breaker_opened"], "upstream"), _by(found["shadow"], "result")
        upstreams = {}
        for name in set(requests) | set(diverted) | set(opened):
            served = _whole(requests.get(name, 0.0))
            upstreams[name] = UpstreamWindow(requests=served, errors=min(served, _whole(errors.get(name, 0.0))),
                                             p95_s=p95.get(name), diverted=_whole(diverted.get(name, 0.0)),
                                             breaker_opened=_whole(opened.get(name, 0.0)))
        return RouteWindow(seconds=float(range_s), upstreams=upstreams,
                           shadow_compared=sum(_whole(shadow.get(result, 0.0)) for result in _COMPARED),
                           shadow_matched=sum(_whole(shadow.get(result, 0.0)) for result in _MATCHED))

    async def _query(self, promql: str, now: float) -> list[dict[str, Any]]:
        assert self._client is not None
        body = await self._client.get("/api/v1/query", {"query": promql, "time": f"{now:.3f}"})
        data = body.get("data") if isinstance(body, dict) and body.get("status") == "success" else None
        if not isinstance(data, dict) or data.get("resultType") != "vector" or not isinstance(data.get("result"), list):
            raise FetchError(f"{self.url}: unexpected answer to {promql!r}")
        return data["result"]

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


def _by(series: list[dict[str, Any]], label: str) -> dict[str, float]:
    """label value -> sample value, leaving out what is not a finite number (histogram_quantile's NaN)."""
    values: dict[str, float] = defaultdict(float)
    for entry in series:
        try:
            name = entry["metric"].get(label, "")
            value = float(entry["value"][1])
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            continue
        if name and math.isfinite(value):
            values[name] += value
    return dict(values)


def _whole(value: float) -> int:
    # increase() extrapolates to the range's ends: 49.7 requests were 50.
    return max(0, round(value))

"""Prometheus's HTTP query API, as far as the gate figures use it: canned answers per kind of query, each recorded."""

from __future__ import annotations

import json
import math
import threading
from typing import Any
from urllib.parse import parse_qs

KINDS = ("p95_s", "errors", "diverted", "breaker_opened", "shadow", "requests")


def kind_of(promql: str) -> str:
    """Which figure a query of strangler/control/prometheus.py reads."""
    if promql.startswith("histogram_quantile"):
        return "p95_s"
    if 'code=~"5.."' in promql:
        return "errors"
    for metric, kind in (("strangler_fallbacks_total", "diverted"),
                         ("strangler_circuit_breaker_transitions_total", "breaker_opened"),
                         ("strangler_shadow_requests_total", "shadow"), ("strangler_requests_total", "requests")):
        if metric in promql:
            return kind
    raise AssertionError(f"a query the fake does not know: {promql}")


class FakePrometheus:
    """An ASGI app answering GET /api/v1/query with `series[kind]` (label sets and values), or `failing[kind]`."""

    def __init__(self) -> None:
        self.series: dict[str, list[tuple[dict[str, str], float]]] = {}
        self.failing: dict[str, tuple[int, dict[str, Any]]] = {}
        self.asked: list[dict[str, str]] = []
        self._lock = threading.Lock()

    def answer(self, kind: str, label: str, **values: float) -> None:
        """`series[kind]` = one series per `label` value, e.g. answer("requests", "upstream", orders=500)."""
        self.series[kind] = [({label: name}, value) for name, value in values.items()]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        params = {name: values[0] for name, values in parse_qs(scope["query_string"].decode()).items()}
        with self._lock:
            self.asked.append(params)
        if scope["path"] != "/api/v1/query" or "query" not in params:
            status, body = 404, {"status": "error", "errorType": "not_found", "error": "no such endpoint"}
        else:
            kind = kind_of(params["query"])
            if kind in self.failing:
                status, body = self.failing[kind]
            else:
                result = [{"metric": labels, "value": [float(params.get("time", "0")), _text(value)]}
                          for labels, value in self.series.get(kind, [])]
                status, body = 200, {"status": "success", "data": {"resultType": "vector", "result": result}}
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})


def _text(value: float) -> str:
    # Prometheus writes sample values as strings, NaN and infinities included.
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)

"""A ramp's test rig: configs with a ramp, an injected clock, and gate figures the test decides."""

from __future__ import annotations

from strangler.control.figures import RouteWindow, UpstreamWindow

START = 1_800_000_000.0


def config_text(*, split: str = "{orders: 5, legacy: 95}", steps: str = "[5, 25, 50, 100]", gates: str = "",
                on_breach: str = "rollback", extra_route: str = "") -> str:
    gates = gates or "{min_requests: 100, max_error_rate: 1%, max_error_rate_increase: 0.5%, max_p95_ratio: 1.5}"
    return f"""\
version: 1
upstreams:
  legacy: {{url: "http://127.0.0.1:8001", role: legacy}}
  orders: {{url: "http://127.0.0.1:8101"}}
  inventory: {{url: "http://127.0.0.1:8102"}}
routes:
  - name: orders-read
    match: {{path: /api/orders}}
    split: {split}
    fallback: legacy
    ramp: {{to: orders, steps: {steps}, every: 60s, gates: {gates}, on_breach: {on_breach}}}
  - name: inventory
    match: {{path: /api/inventory}}
    to: inventory
    fallback: legacy
  - name: pages
    match: {{path: /}}
    split: {{inventory: 10, legacy: 90}}
{extra_route}"""


def healthy(to_requests: int = 500, **changes: object) -> RouteWindow:
    """A window where `orders` does as well as legacy; `changes` set orders' or legacy's figures."""
    to = {"requests": to_requests, "errors": 0, "p95_s": 0.050}
    legacy = {"requests": 5000, "errors": 5, "p95_s": 0.050}
    for key, value in changes.items():
        side, _, field = key.partition("_")
        (to if side == "to" else legacy)[field] = value
    return RouteWindow(seconds=60, upstreams={"orders": UpstreamWindow(**to), "legacy": UpstreamWindow(**legacy)})


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


class Figures:
    """GateFigures that answer what the test says, and remember when windows began."""

    def __init__(self) -> None:
        self.window: RouteWindow | None | Exception = healthy()
        self.begun: list[tuple[str, float]] = []
        self.asked: list[tuple[str, float, float]] = []

    def begin_window(self, route: str, started_at: float) -> None:
        self.begun.append((route, started_at))

    async def read_window(self, route: str, started_at: float, now: float) -> RouteWindow | None:
        self.asked.append((route, started_at, now))
        if isinstance(self.window, Exception):
            raise self.window
        return self.window


def ramp_config(legacy: str, new: str, *, steps: str = "[5, 25, 50, 100]", min_requests: int = 5,
                split: str = "{new: 5, legacy: 95}", top: str = "", every: str = "1s") -> str:
    """The route `all` to `legacy` (role: legacy) and `new` at those URLs, sticky on X-User, ramping to `new`."""
    return f"""
version: 1
{top}
upstreams:
  legacy: {{url: "{legacy}", role: legacy}}
  new: {{url: "{new}"}}
routes:
  - name: all
    match: {{path: /}}
    split: {split}
    sticky: header:X-User
    ramp:
      to: new
      steps: {steps}
      every: {every}
      gates: {{min_requests: {min_requests}, max_error_rate: 1%}}
"""

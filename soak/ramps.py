"""The soak's ramp: a route ramping to `orders` under the load, rolled back by a planted fault, and roll back all.

The route `ramped` starts at 5% on orders and steps up every `ramp_period_s`
while its gates hold (toxics on either side may break them too). The drill:
once it has advanced, orders answers 503 to every request of that route (soak/upstream.py's
fault switch), which retries and the fallback hide from clients but the gates
count against orders, so the controller rolls the route back; then the fault
goes and the ramp is resumed, again and again. Half way through, everything
goes back to legacy for a few periods and is lifted. Config reloads go on all
the while and keep the ramp's block, so the ramp keeps its place through them.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx

RAMPED_PATH = "/api/ramped"


def route_text(every_s: float) -> str:
    return f"""\
  - name: ramped
    match: {{path: {RAMPED_PATH}}}
    split: {{orders: 5, legacy: 95}}
    fallback: legacy
    sticky: header:X-User
    timeout: 5s
    ramp: {{to: orders, steps: [5, 25, 50, 100], every: {every_s:g}s, gates: {{min_requests: 20, max_error_rate: 30%}}}}
"""


class RampDrill(threading.Thread):
    def __init__(self, admin_url: str, orders_url: str, seconds: float, period_s: float, counts: Counter,
                 problems: list[str], stop: threading.Event) -> None:
        super().__init__(daemon=True, name="soak-ramp")
        self.admin, self.orders, self.seconds, self.period_s = admin_url, orders_url, seconds, period_s
        self.counts, self.problems, self.stop_event = counts, problems, stop
        self._seen_at: set[str] = set()

    def run(self) -> None:
        begin = time.monotonic()
        planted = False
        with httpx.Client(timeout=10) as client:
            try:
                while not self.stop_event.wait(self.period_s / 2):
                    ramp = self._ramp(client)
                    if not self.counts["rollback_all"] and time.monotonic() - begin > self.seconds / 2:
                        self._roll_everything_back(client)
                        continue
                    if ramp["state"] == "rolled_back":
                        if planted:
                            client.post(self.orders + "/__fault", json={"prefix": None})
                            planted = False
                        self._act(client, "resume")
                    elif ramp["state"] == "done":
                        self._act(client, "rollback")
                    elif not planted and self.counts["advance"] > self.counts["planted"]:
                        client.post(self.orders + "/__fault", json={"prefix": RAMPED_PATH})
                        planted = True
                        self.counts["planted"] += 1
            except (httpx.HTTPError, KeyError, ValueError) as error:
                self.problems.append(f"ramp drill: {error!r}")
            finally:
                try:
                    client.post(self.orders + "/__fault", json={"prefix": None})
                except httpx.HTTPError:
                    pass

    def _ramp(self, client: httpx.Client) -> dict:
        ramp = next(r for r in client.get(self.admin + "/ramps").json()["ramps"] if r["route"] == "ramped")
        for entry in ramp["history"]:
            key = f"{entry['at']} {entry.get('decision') or entry.get('event')}"
            if "decision" in entry and key not in self._seen_at:
                self._seen_at.add(key)
                by = "operator" if entry["gate"] == "operator" else "gates"
                self.counts[entry["decision"] if by == "gates" else f"{entry['decision']} (operator)"] += 1
        return ramp

    def _act(self, client: httpx.Client, action: str) -> None:
        answer = client.post(f"{self.admin}/ramps/ramped/{action}", json={"reason": "soak drill"})
        if answer.status_code != 200:
            self.problems.append(f"ramp drill: {action} answered {answer.status_code}: {answer.text[:200]}")

    def _roll_everything_back(self, client: httpx.Client) -> None:
        done = client.post(self.admin + "/rollback-all", json={"reason": "soak drill"})
        if done.status_code != 200 or "ramped" not in done.json()["routes"]:
            self.problems.append(f"ramp drill: roll back all answered {done.status_code}: {done.text[:200]}")
            return
        self.counts["rollback_all"] += 1
        self.stop_event.wait(2 * self.period_s)
        split = next(r for r in client.get(self.admin + "/routes").json()["routes"] if r["name"] == "ramped")["split"]
        if split.get("orders") != 0:
            self.problems.append(f"ramp drill: under roll back all, ramped's split is {split}")
        lifted = client.post(self.admin + "/rollback-all/lift", json={"reason": "soak drill over"})
        if lifted.status_code != 200 or lifted.json()["active"]:
            self.problems.append(f"ramp drill: lift answered {lifted.status_code}: {lifted.text[:200]}")
            return
        self.counts["lifted"] += 1

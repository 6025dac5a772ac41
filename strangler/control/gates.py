"""A ramp's gates over one window: pass, breach (and which gate), or inconclusive (and why).

`to` is judged against the route's legacy side over the same window. Requests
meant for `to` that its breaker or a failure sent to the fallback count as
requests and errors of `to`, and a breaker that opened on `to` is a breach
whatever the traffic. Too little data, or figures that cannot be read, is
inconclusive: never a breach, never a pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..config.model import Ramp
from .figures import RouteWindow, UpstreamWindow

Outcome = Literal["pass", "breach", "inconclusive"]


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    gate: str                                   # the gate that decided; "none" when every gate held
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)


def thresholds(ramp: Ramp) -> dict[str, Any]:
    """The gates that are on, by their names in the file."""
    gates = ramp.gates
    found: dict[str, Any] = {"min_requests": gates.min_requests}
    for name, value in (("max_error_rate", gates.max_error_rate_percent),
                        ("max_error_rate_increase", gates.max_error_rate_increase_percent),
                        ("max_p95_ratio", gates.max_p95_ratio),
                        ("min_shadow_match", gates.min_shadow_match_percent)):
        if value is not None:
            found[name] = value
    return found


def judge(ramp: Ramp, window: RouteWindow | None) -> Verdict:
    # The config allows min_shadow_match only on a route with shadow on.
    has_shadow = ramp.gates.min_shadow_match_percent is not None
    if window is None:
        return Verdict("inconclusive", "none", "the window's figures could not be read")
    to, legacy = window.of(ramp.to), window.of(ramp.legacy)
    to_requests = to.requests + to.diverted
    to_rate = _rate(to.errors + to.diverted, to_requests)
    legacy_rate = _rate(legacy.errors, legacy.requests)
    figures = {
        "window_s": round(window.seconds, 3),
        "to": _described(to, to_requests, to_rate),
        "legacy": _described(legacy, legacy.requests, legacy_rate),
    }
    if has_shadow:
        figures["shadow"] = {"compared": window.shadow_compared, "matched": window.shadow_matched}

    def verdict(outcome: Outcome, gate: str, reason: str) -> Verdict:
        return Verdict(outcome, gate, reason, figures)

    gates = ramp.gates
    if to.breaker_opened:
        return verdict("breach", "circuit_breaker", f"the breaker of {ramp.to} opened {to.breaker_opened} time(s)")
    if to_requests < gates.min_requests:
        return verdict("inconclusive", "min_requests",
                       f"{to_requests} request(s) for {ramp.to} in the window, fewer than {gates.min_requests}")
    breaches: list[Verdict] = []
    unsure: list[Verdict] = []
    if gates.max_error_rate_percent is not None and to_rate > gates.max_error_rate_percent:
        breaches.append(verdict("breach", "max_error_rate", f"error rate of {ramp.to} {to_rate:.3g}% "
                                f"over {gates.max_error_rate_percent:g}%"))
    if gates.max_error_rate_increase_percent is not None:
        if not legacy.requests:
            unsure.append(verdict("inconclusive", "max_error_rate_increase",
                                  f"{ramp.legacy} answered nothing in the window to compare with"))
        elif to_rate - legacy_rate > gates.max_error_rate_increase_percent:
            breaches.append(verdict(
                "breach", "max_error_rate_increase",
                f"error rate of {ramp.to} {to_rate:.3g}% is {to_rate - legacy_rate:.3g} points over {ramp.legacy}'s "
                f"{legacy_rate:.3g}%, more than {gates.max_error_rate_increase_percent:g}"))
    if gates.max_p95_ratio is not None:
        if to.p95_s is None or legacy.p95_s is None or legacy.p95_s <= 0:
            unsure.append(verdict("inconclusive", "max_p95_ratio", "no latency of both sides in the window"))
        elif to.p95_s / legacy.p95_s > gates.max_p95_ratio:
            breaches.append(verdict("breach", "max_p95_ratio", f"p95 of {ramp.to} {to.p95_s * 1000:.1f} ms is "
                                    f"{to.p95_s / legacy.p95_s:.2f}x {ramp.legacy}'s {legacy.p95_s * 1000:.1f} ms, "
                                    f"over {gates.max_p95_ratio:g}x"))
    if gates.min_shadow_match_percent is not None:
        compared = window.shadow_compared
        if compared < gates.min_requests:
            unsure.append(verdict("inconclusive", "min_shadow_match",
                                  f"{compared} shadow comparison(s) in the window, fewer than {gates.min_requests}"))
        else:
            match = 100.0 * window.shadow_matched / compared
            if match < gates.min_shadow_match_percent:
                breaches.append(verdict("breach", "min_shadow_match", f"shadow match {match:.3g}% under "
                                        f"{gates.min_shadow_match_percent:g}%"))
    if breaches:
        return breaches[0]
    if unsure:
        return unsure[0]
    return verdict("pass", "none", "every gate held")


def _rate(errors: int, requests: int) -> float:
    return 100.0 * errors / requests if requests else 0.0


def _described(side: UpstreamWindow, requests: int, rate: float) -> dict[str, Any]:
    return {"requests": requests, "errors": side.errors, "error_rate_percent": round(rate, 4),
            "p95_s": None if side.p95_s is None else round(side.p95_s, 6), "diverted": side.diverted,
            "breaker_opened": side.breaker_opened}

"""A route's `ramp:` block: where it goes, in which steps, how often, and the gates each window must pass."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json

from . import values
from .model import Gates, Ramp
from .reader import Reader, join
from .source import Node

RAMP_KEYS = ("to", "steps", "every", "gates", "on_breach")
# YAML key -> Gates field; the percents are read as percents, the ratio as a plain number.
GATE_FIELDS = {
    "min_requests": "min_requests",
    "max_error_rate": "max_error_rate_percent",
    "max_error_rate_increase": "max_error_rate_increase_percent",
    "max_p95_ratio": "max_p95_ratio",
    "min_shadow_match": "min_shadow_match_percent",
}
BUCKETS_PER_PERCENT = 100


def ramp(r: Reader, node: Node, key: Node, path: str, *, split: tuple[tuple[str, float], ...] | None,
         legacy: str | None, has_shadow: bool) -> Ramp | None:
    """The ramp, checked against the route's split and the legacy upstream; None when anything is wrong."""
    before = len(r.problems)
    fields = r.mapping(node, path, RAMP_KEYS)
    if fields is None:
        return None
    to_node = r.require(fields, "to", node, path)
    to = r.string(to_node, join(path, "to")) if to_node else None
    steps_node = r.require(fields, "steps", node, path)
    steps = _steps(r, steps_node, join(path, "steps")) if steps_node else None
    every_node = r.require(fields, "every", node, path)
    every_s = r.value(every_node, join(path, "every"), values.duration) if every_node else None
    gates = _gates(r, fields["gates"], join(path, "gates"), has_shadow) if "gates" in fields else Gates()
    on_breach = r.choice(fields["on_breach"], join(path, "on_breach"), ("rollback", "hold")) \
        if "on_breach" in fields else "rollback"

    if legacy is None:
        r.problem(key, path, "a ramp moves shares away from the legacy upstream, but no upstream says role: legacy")
    elif split is not None:
        names = [name for name, _ in split]
        if legacy not in names:
            r.problem(key, path, f"the route's split does not name the legacy upstream '{legacy}': "
                      "a ramp moves shares between it and `to`")
        if to is not None and to_node is not None:
            if to == legacy:
                r.problem(to_node, join(path, "to"),
                          f"'{to}' is the legacy upstream: a ramp moves traffic away from it")
            elif to not in names:
                close = difflib.get_close_matches(to, names, n=1)
                tip = f"did you mean '{close[0]}'?" if close else "the split names " + ", ".join(names)
                r.problem(to_node, join(path, "to"), f"'{to}' is not in the route's split ({tip})")
        others = [name for name in names if name not in (to, legacy)]
        if others and to in names and legacy in names and to != legacy:
            r.problem(key, path, f"a ramp moves shares between '{to}' and '{legacy}' only, but the split also names "
                      + ", ".join(f"'{name}'" for name in others))
    if len(r.problems) > before or None in (to, steps, every_s, gates, on_breach, split, legacy):
        return None
    assert to is not None and steps is not None and every_s is not None and split is not None and legacy is not None
    found = Ramp(to=to, legacy=legacy, steps=steps, every_s=every_s, gates=gates,  # type: ignore[arg-type]
                 on_breach=on_breach)
    return dataclasses.replace(found, id=ramp_id(found, split))


def ramp_id(ramp: Ramp, split: tuple[tuple[str, float], ...]) -> str:
    """A fingerprint of what the file says about the ramp: its block and where it starts (the split)."""
    gates = ramp.gates
    described = {
        "to": ramp.to, "legacy": ramp.legacy, "steps": list(ramp.steps), "every_s": ramp.every_s,
        "on_breach": ramp.on_breach, "split": [list(share) for share in split],
        "gates": {key: getattr(gates, field) for key, field in GATE_FIELDS.items()},
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


def _steps(r: Reader, node: Node, path: str) -> tuple[float, ...] | None:
    items = r.items(node, path)
    if node.kind == "list" and not items:
        r.problem(node, path, "steps is empty: give the share of `to` at each step, such as [5, 25, 50, 100]")
        return None
    steps: list[float] = []
    ok = node.kind == "list"
    for where, item in items:
        step = r.value(item, where, values.percent)
        if step is None:
            ok = False
            continue
        if abs(step * BUCKETS_PER_PERCENT - round(step * BUCKETS_PER_PERCENT)) > 1e-6:
            r.problem(item, where, f"{item.text} has more than 2 decimals, finer than the 10,000 buckets")
            ok = False
        elif steps and step <= steps[-1]:
            r.problem(item, where, f"steps must increase: {item.text} comes after {steps[-1]:g}")
            ok = False
        steps.append(step)
    return tuple(steps) if ok else None


def _gates(r: Reader, node: Node, path: str, has_shadow: bool) -> Gates | None:
    fields = r.mapping(node, path, tuple(GATE_FIELDS))
    if fields is None:
        return None
    settings: dict[str, object] = {}
    for key, value in fields.items():
        where = join(path, key)
        if key == "min_requests":
            settings["min_requests"] = r.integer(value, where, 1)
        elif key == "max_p95_ratio":
            settings["max_p95_ratio"] = r.value(value, where, values.ratio)
        else:
            settings[GATE_FIELDS[key]] = r.value(value, where, values.percent)
    if "min_shadow_match" in fields and not has_shadow:
        r.problem(fields.key_nodes["min_shadow_match"], join(path, "min_shadow_match"),
                  "min_shadow_match needs shadow on this route; leave it out, or add shadow: to the route")
        return None
    if None in settings.values():
        return None
    return Gates(**settings)  # type: ignore[arg-type]

"""Configs for `strangler run` that many tests write alike."""

from __future__ import annotations


def catch_all(legacy: str, *, top: str = "") -> str:
    """Every request to the one upstream `legacy` at that URL, by the route `all`; `top` adds top-level keys."""
    return f"""
version: 1
{top}
upstreams:
  legacy: {{url: "{legacy}"}}
routes:
  - name: all
    match: {{path: /}}
    to: legacy
"""


def one_route(new: str, legacy: str | None = None, *, fallback: bool = False, name: str = "orders", path: str = "/",
              new_options: str = "", defaults: dict[str, str] | None = None, **route: str) -> str:
    """A config with one route, `name` on `path`, to the upstream `new` at that URL.

    `legacy` adds a second upstream, the route's fallback if `fallback`. `new_options`
    go into new's flow mapping ("max_concurrent: 2, timeout: 20s"); `defaults` and
    `route` are keys with their values in YAML flow style: `retry="{attempts: 1}"`.
    """
    options = f", {new_options}" if new_options else ""
    lines = ["version: 1", "upstreams:", f'  new: {{url: "{new}"{options}}}']
    if legacy is not None:
        lines.append(f'  legacy: {{url: "{legacy}"}}')
    if defaults:
        lines += ["defaults:", *(f"  {key}: {value}" for key, value in defaults.items())]
    lines += ["routes:", f"  - name: {name}", f"    match: {{path: {path}}}", "    to: new"]
    if fallback:
        lines.append("    fallback: legacy")
    lines += [f"    {key}: {value}" for key, value in route.items()]
    return "\n".join(lines) + "\n"

"""A pocket template engine in Django's syntax: {{ var|filter }}, {% if %}, {% for %}, autoescape.

Jinja2 is not a dependency of the project, and the shop needs only this much.
"""

from __future__ import annotations

import html
import re
from collections import ChainMap
from functools import lru_cache
from pathlib import Path
from typing import Any

from legacy_monolith import settings

_TOKEN = re.compile(r"({{.*?}}|{%.*?%})", re.S)


class SafeString(str):
    """Markup that must not be escaped again."""


def mark_safe(text: str) -> SafeString:
    return SafeString(text)


def _money(cents: Any) -> str:
    return f"{int(cents) / 100:,.2f}"


FILTERS = {"safe": mark_safe, "money": _money, "upper": lambda v: str(v).upper(), "title": lambda v: str(v).title()}


def _lookup(context: ChainMap, dotted: str) -> Any:
    if dotted.startswith(("'", '"')):
        return dotted[1:-1]
    head, *rest = dotted.split(".")
    value = context.get(head, "")
    for part in rest:
        value = value.get(part, "") if isinstance(value, dict) else getattr(value, part, "")
    return value


def _evaluate(context: ChainMap, expression: str) -> Any:
    name, *filters = [part.strip() for part in expression.split("|")]
    value = _lookup(context, name)
    for name in filters:
        value = FILTERS[name](value)
    return value


def _parse(tokens: list[str], until: tuple[str, ...] = ()) -> tuple[list, str | None]:
    """Nodes up to one of `until` block tags; returns (nodes, the tag that ended them)."""
    nodes: list = []
    while tokens:
        token = tokens.pop(0)
        if token.startswith("{{"):
            nodes.append(("var", token[2:-2].strip()))
        elif token.startswith("{%"):
            tag = token[2:-2].strip()
            if tag in until:
                return nodes, tag
            if tag.startswith("for "):
                target, _, iterable = tag[4:].partition(" in ")
                body, end = _parse(tokens, ("empty", "endfor"))
                empty = _parse(tokens, ("endfor",))[0] if end == "empty" else []
                nodes.append(("for", target.strip(), iterable.strip(), body, empty))
            elif tag.startswith("if "):
                body, end = _parse(tokens, ("else", "endif"))
                other = _parse(tokens, ("endif",))[0] if end == "else" else []
                nodes.append(("if", tag[3:].strip(), body, other))
            elif tag == "csrf_token":
                nodes.append(("csrf",))
            else:
                raise SyntaxError(f"unknown template tag {{% {tag} %}}")
        else:
            nodes.append(("text", token))
    if until:
        raise SyntaxError(f"missing {{% {until[-1]} %}}")
    return nodes, None


def _render(nodes: list, context: ChainMap) -> str:
    out = []
    for node in nodes:
        kind = node[0]
        if kind == "text":
            out.append(node[1])
        elif kind == "var":
            value = _evaluate(context, node[1])
            out.append(value if isinstance(value, SafeString) else html.escape(str(value)))
        elif kind == "csrf":
            token = html.escape(context.get("csrf_token", ""))
            out.append(f'<input type="hidden" name="{settings.CSRF_FORM_FIELD}" value="{token}">')
        elif kind == "for":
            _, target, iterable, body, empty = node
            items = list(_lookup(context, iterable) or ())
            for item in items:
                out.append(_render(body, context.new_child({target: item})))
            if not items:
                out.append(_render(empty, context))
        elif kind == "if":
            _, expression, body, other = node
            negate = expression.startswith("not ")
            truthy = bool(_evaluate(context, expression[4:] if negate else expression))
            out.append(_render(body if truthy != negate else other, context))
    return "".join(out)


@lru_cache(maxsize=None)
def _compiled(template_name: str) -> list:
    return _parse(_TOKEN.split(_find(template_name).read_text(encoding="utf-8")))[0]


def _find(template_name: str) -> Path:
    # Like Django's APP_DIRS: the project's templates first, then each app's.
    app_dirs = [settings.BASE_DIR / app.rsplit(".", 1)[-1] / "templates" for app in settings.INSTALLED_APPS]
    for directory in [settings.BASE_DIR / "templates", *app_dirs]:
        if (directory / template_name).is_file():
            return directory / template_name
    raise FileNotFoundError(f"template {template_name!r} not found")


def render_to_string(template_name: str, context: dict[str, Any]) -> str:
    return _render(_compiled(template_name), ChainMap(context))

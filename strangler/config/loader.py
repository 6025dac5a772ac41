"""Load route rules: YAML -> a frozen Config, or a ConfigError with every problem at once."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

from . import routes, sections, shadow, values
from .model import Address, Config
from .reader import ConfigError, Problem, Reader, join
from .source import Node, SourceError, read_tree

__all__ = ["ConfigError", "Problem", "load_admin", "load_config", "parse_config"]

TOP_KEYS = ("version", "listen", "admin", "upstreams", "defaults", "routes", "trusted_proxies",
            "expose_headers", "limits", "access_log", "state_dir", "paths")
DEFAULTS_KEYS = ("retry", "circuit_breaker", "sticky")
_WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def load_config(path: str | os.PathLike[str]) -> Config:
    """The config in a file; Config.sha256 is of the file's bytes."""
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        reason = err.strerror or str(err)
        raise ConfigError([Problem(source, 1, 1, "", f"cannot read file: {reason}")]) from None
    return parse_config(data, source)


def load_admin(path: str | os.PathLike[str]) -> tuple[Address, str | None] | None:
    """The admin listener's address and token from a file, even when the rest of it is invalid
    (an operator rolling everything back may be doing so because of that file); None if unreadable."""
    try:
        root = read_tree(Path(path).read_bytes())
    except (OSError, SourceError):
        return None
    if root is None or root.kind != "mapping":
        return None
    node = next((value for key, value in root.items if key.text == "admin"), None)
    if node is None:
        return Config().admin, None
    r = Reader(str(path))
    address = sections.address(r, node, "admin", Config().admin, sections.ADMIN_KEYS)
    token = sections.admin_token(r, node, "admin")
    return None if r.problems else (address, token)


def parse_config(data: bytes | str, source: str = "<string>") -> Config:
    """The config in `data`; `source` names it in messages."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        root = read_tree(raw)
    except SourceError as err:
        raise ConfigError([Problem(source, err.line, err.col, "", err.message)]) from None
    if root is None:
        raise ConfigError([Problem(source, 1, 1, "", "the file is empty: expected a mapping with version, "
                                                      "upstreams and routes")])
    r = Reader(source)
    config = _config(r, root)
    if r.problems:
        raise ConfigError(r.problems)
    # State lives beside the config unless it says otherwise: a relative state_dir is read from the file's folder.
    state_dir = os.path.normpath(os.path.join(os.path.dirname(source) if source != "<string>" else "", config.state_dir))
    return dataclasses.replace(config, source=source, sha256=hashlib.sha256(raw).hexdigest(), state_dir=state_dir)


def _config(r: Reader, root: Node) -> Config:
    fields = r.mapping(root, "", TOP_KEYS)
    if fields is None:
        return Config()
    default = Config()
    if "version" in fields:
        node = fields["version"]
        if not (node.kind == "scalar" and node.type == "int" and node.value == 1):
            r.problem(node, "version", f"expected version 1, found {node.text or 'nothing'}")
    listen = sections.address(r, fields["listen"], "listen", default.listen) if "listen" in fields else default.listen
    admin = sections.address(r, fields["admin"], "admin", default.admin, sections.ADMIN_KEYS) \
        if "admin" in fields else default.admin
    if _same_listener(listen, admin):
        at = fields.get("admin") or fields.get("listen") or root
        r.problem(at, "admin", "admin must not share the public listener")
    known = sections.upstreams(r, fields["upstreams"], "upstreams") if "upstreams" in fields else {}
    legacy = sections.legacy_upstream(r, fields["upstreams"], "upstreams") if "upstreams" in fields else None
    defaults = _defaults(r, fields["defaults"]) if "defaults" in fields else routes.Defaults()
    encoded_slash = sections.paths(r, fields["paths"], "paths") if "paths" in fields else None
    if encoded_slash is not None:
        defaults = dataclasses.replace(defaults, encoded_slash=encoded_slash)
    read: list[routes.ReadRoute] = []
    if "routes" in fields:
        read = routes.routes(r, fields["routes"], "routes", known, defaults, legacy)
        if fields["routes"].kind == "list" and not fields["routes"].items:
            r.problem(fields["routes"], "routes", "no routes: every request would get 404")
    else:
        r.problem(root, "routes", "no routes: every request would get 404")
    return Config(
        listen=listen,
        admin=admin,
        upstreams=tuple(upstream for upstream in known.values() if upstream is not None),
        routes=tuple(item.route for item in read),
        trusted_proxies=sections.trusted_proxies(r, fields["trusted_proxies"], "trusted_proxies")
        if "trusted_proxies" in fields else (),
        expose_headers=_flag(r, fields.get("expose_headers"), "expose_headers", default.expose_headers),
        limits=sections.limits(r, fields["limits"], "limits") if "limits" in fields else default.limits,
        access_log=sections.access_log(r, fields["access_log"], "access_log")
        if "access_log" in fields else default.access_log,
        encoded_slash=defaults.encoded_slash,
        admin_token=sections.admin_token(r, fields["admin"], "admin") if "admin" in fields else None,
        state_dir=_state_dir(r, fields["state_dir"]) if "state_dir" in fields else default.state_dir,
        warnings=(*r.warnings, *routes.shadowing(r, read), *shadow.warnings(r, read)),
    )


def _state_dir(r: Reader, node: Node) -> str:
    found = r.string(node, "state_dir")
    if found is not None and not found.strip():
        r.problem(node, "state_dir", "state_dir must not be empty: leave it out for var/strangler beside the config")
    return found.strip() if found and found.strip() else Config().state_dir


def _same_listener(listen: Address, admin: Address) -> bool:
    # Port 0 asks the OS for a free port, so two zeros never collide; a
    # wildcard host takes the port on every address, the other host's too.
    if listen.port != admin.port or listen.port == 0:
        return False
    return listen.host == admin.host or listen.host in _WILDCARD_HOSTS or admin.host in _WILDCARD_HOSTS


def _defaults(r: Reader, node: Node) -> routes.Defaults:
    fields = r.mapping(node, "defaults", DEFAULTS_KEYS) or {}
    defaults = routes.Defaults()
    retry = sections.retry(r, fields["retry"], "defaults.retry", defaults.retry) if "retry" in fields else None
    breaker = sections.breaker(r, fields["circuit_breaker"], "defaults.circuit_breaker", defaults.breaker) \
        if "circuit_breaker" in fields else None
    sticky = r.text(fields["sticky"], join("defaults", "sticky"), values.sticky) if "sticky" in fields else None
    return routes.Defaults(
        retry=retry or defaults.retry,
        breaker=breaker or defaults.breaker,
        sticky=sticky or defaults.sticky,
    )


def _flag(r: Reader, node: Node | None, path: str, default: bool) -> bool:
    found = r.boolean(node, path) if node is not None else None
    return default if found is None else found

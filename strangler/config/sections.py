"""The sections around the routes: listeners, upstreams, policies, limits, access log."""

from __future__ import annotations

import dataclasses
import ssl
from pathlib import Path
from typing import TypeVar

from . import values
from .model import (
    AccessLog, Address, BreakerPolicy, EncodedSlash, HealthCheck, IPNetwork, Limits, ListenerTls, RetryPolicy,
    Upstream, UpstreamTls,
)
from .reader import Reader, describe, join
from .source import Node

P = TypeVar("P", RetryPolicy, BreakerPolicy)

RETRY_KEYS = ("attempts", "backoff", "retry_on", "methods", "budget")
BREAKER_KEYS = ("failure_threshold", "recovery_timeout", "success_threshold")
UPSTREAM_KEYS = ("url", "connect_timeout", "timeout", "max_concurrent", "health", "tls", "role")
LISTEN_KEYS = ("host", "port", "tls")
ADMIN_KEYS = ("host", "port", "tls", "token")
ROLES = ("legacy",)
# YAML key -> (Limits field, kind of value)
LIMIT_FIELDS = {
    "max_url_length": ("max_url_bytes", "size"),
    "max_header_size": ("max_header_bytes", "size"),
    "max_header_count": ("max_header_count", "count"),
    "max_body_size": ("max_body_bytes", "size"),
    "header_timeout": ("header_timeout_s", "duration"),
    "body_idle_timeout": ("body_idle_timeout_s", "duration"),
    "max_concurrent_requests": ("max_concurrent_requests", "count"),
    "websocket_idle_timeout": ("websocket_idle_timeout_s", "duration"),
    "websocket_drain_timeout": ("websocket_drain_timeout_s", "duration"),
}
_RETRY_ON = "expected connect-error, timeout or a status from 500 to 599"


def address(r: Reader, node: Node, path: str, default: Address, keys: tuple[str, ...] = LISTEN_KEYS) -> Address:
    fields = r.mapping(node, path, keys) or {}
    host, port = default.host, default.port
    tls = _listener_tls(r, fields["tls"], join(path, "tls")) if "tls" in fields else None
    if "host" in fields:
        found_host = r.string(fields["host"], join(path, "host"))
        if found_host is not None and not found_host.strip():
            r.problem(fields["host"], join(path, "host"), "host must not be empty")
        host = found_host.strip() if found_host else host
    if "port" in fields:
        found = r.integer(fields["port"], join(path, "port"), 0, 65535, what="a port")
        port = port if found is None else found
    return Address(host=host, port=port, tls=tls)


def _listener_tls(r: Reader, node: Node, path: str) -> ListenerTls | None:
    fields = r.mapping(node, path, ("cert", "key"))
    if fields is None:
        return None
    cert_node, key_node = r.require(fields, "cert", node, path), r.require(fields, "key", node, path)
    cert = _readable_file(r, cert_node, join(path, "cert")) if cert_node else None
    key = _readable_file(r, key_node, join(path, "key")) if key_node else None
    if cert is None or key is None:
        return None
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as error:
        r.problem(cert_node, join(path, "cert"), "cannot use this certificate with its key (expected a PEM "
                  f"certificate chain and the PEM private key that matches it): {_ssl_reason(error)}")
        return None
    return ListenerTls(cert=cert, key=key)


def _upstream_tls(r: Reader, node: Node, path: str) -> UpstreamTls | None:
    fields = r.mapping(node, path, ("ca_file", "server_name", "verify"))
    if fields is None:
        return None
    settings: dict[str, object] = {}
    if "ca_file" in fields:
        settings["ca_file"] = ca_file = _readable_file(r, fields["ca_file"], join(path, "ca_file"))
        if ca_file is not None:
            try:
                ssl.create_default_context(cafile=ca_file)
            except (ssl.SSLError, OSError) as error:
                r.problem(fields["ca_file"], join(path, "ca_file"), f"not a PEM file of CA certificates: "
                          f"{_ssl_reason(error)}")
                settings["ca_file"] = None
    if "server_name" in fields:
        settings["server_name"] = r.text(fields["server_name"], join(path, "server_name"), values.host)
    if "verify" in fields:
        settings["verify"] = r.boolean(fields["verify"], join(path, "verify"))
    if None in settings.values():
        return None
    return UpstreamTls(**settings)  # type: ignore[arg-type]


def _readable_file(r: Reader, node: Node, path: str) -> str | None:
    """A file name, resolved against the config file's directory, that can be read now."""
    name = r.string(node, path)
    if name is None:
        return None
    base = Path(r.source).parent if not r.source.startswith("<") else Path.cwd()
    resolved = base / Path(name).expanduser()
    try:
        with open(resolved, "rb"):
            pass
    except OSError as error:
        r.problem(node, path, f"cannot read '{resolved}': {error.strerror or error}")
        return None
    return str(resolved)


def _ssl_reason(error: BaseException) -> str:
    return getattr(error, "reason", None) or getattr(error, "strerror", None) or str(error)


def admin_token(r: Reader, node: Node, path: str) -> str | None:
    """admin.token, when the admin mapping sets one (its other keys are read by `address`)."""
    found = next((value for key, value in node.items if key.text == "token"), None) if node.kind == "mapping" else None
    if found is None:
        return None
    token = r.string(found, join(path, "token"))
    if token is not None and not token.strip():
        r.problem(found, join(path, "token"), "token must not be empty: leave it out to run without one")
        return None
    return token.strip() if token else None


def legacy_upstream(r: Reader, node: Node, path: str) -> str | None:
    """The upstream that says role: legacy; a second one is a problem where it says so."""
    first: tuple[str, int] | None = None
    for key, value in node.items if node.kind == "mapping" else ():
        role = next((v for k, v in value.items if k.text == "role"), None) if value.kind == "mapping" else None
        if role is None or role.kind != "scalar" or role.text != "legacy":
            continue
        if first is None:
            first = (key.text, role.line)
        else:
            r.problem(role, join(path, f"{key.text}.role"), f"'{first[0]}' already has role: legacy (line {first[1]}); "
                      "exactly one upstream may be the legacy one")
    return first[0] if first else None


def upstreams(r: Reader, node: Node, path: str) -> dict[str, Upstream | None]:
    """Upstreams by name; None for one with problems, so references to it still resolve."""
    result: dict[str, Upstream | None] = {}
    for name, key, value in r.entries(node, path) or []:
        where = join(path, name)
        if r.value(key, where, lambda _: values.name(name)) is not None:
            result[name] = _upstream(r, name, value, where)
    return result


def _upstream(r: Reader, name: str, node: Node, path: str) -> Upstream | None:
    fields = r.mapping(node, path, UPSTREAM_KEYS)
    if fields is None:
        return None
    url_node = r.require(fields, "url", node, path)
    url = r.text(url_node, join(path, "url"), values.url) if url_node else None
    settings: dict[str, object] = {}
    for key, field in (("connect_timeout", "connect_timeout_s"), ("timeout", "timeout_s")):
        if key in fields:
            settings[field] = r.value(fields[key], join(path, key), values.duration)
    if "max_concurrent" in fields:
        settings["max_concurrent"] = r.integer(fields["max_concurrent"], join(path, "max_concurrent"), 1)
    if "health" in fields:
        settings["health"] = _health(r, fields["health"], join(path, "health"))
    if "tls" in fields:
        settings["tls"] = _upstream_tls(r, fields["tls"], join(path, "tls"))
        if url is not None and not url.startswith("https://"):
            r.problem(fields.key_nodes["tls"], join(path, "tls"), "tls applies to https:// upstreams only")
    if "role" in fields:
        settings["role"] = r.choice(fields["role"], join(path, "role"), ROLES)
    if url is None or None in settings.values():
        return None
    return Upstream(name=name, url=url, **settings)  # type: ignore[arg-type]


def _health(r: Reader, node: Node, path: str) -> HealthCheck | None:
    fields = r.mapping(node, path, ("path", "interval", "timeout"))
    if fields is None:
        return None
    path_node = r.require(fields, "path", node, path)
    check_path = r.string(path_node, join(path, "path")) if path_node else None
    if path_node and check_path is not None and not check_path.startswith("/"):
        r.problem(path_node, join(path, "path"), f"path must start with '/', found '{check_path}'")
        check_path = None
    settings = {
        field: r.value(fields[key], join(path, key), values.duration)
        for key, field in (("interval", "interval_s"), ("timeout", "timeout_s"))
        if key in fields
    }
    if check_path is None or None in settings.values():
        return None
    return HealthCheck(path=check_path, **settings)  # type: ignore[arg-type]


def retry(r: Reader, node: Node, path: str, base: RetryPolicy) -> RetryPolicy:
    """`base` with the keys this mapping sets; backoff is merged key by key too."""
    fields = r.mapping(node, path, RETRY_KEYS, hints={"on": "retry_on"}) or {}
    changes: dict[str, object] = {}
    if "attempts" in fields:
        changes["attempts"] = r.integer(fields["attempts"], join(path, "attempts"), 1)
    backoff = fields.get("backoff")
    if backoff is not None:
        parts = r.mapping(backoff, join(path, "backoff"), ("initial", "max")) or {}
        for key in parts:
            changes[f"backoff_{key}_s"] = r.value(parts[key], join(path, f"backoff.{key}"), values.duration)
    if "retry_on" in fields:
        changes.update(_retry_on(r, fields["retry_on"], join(path, "retry_on")))
    if "methods" in fields:
        changes["methods"] = methods(r, fields["methods"], join(path, "methods"))
    if "budget" in fields:
        budget = r.value(fields["budget"], join(path, "budget"), values.percent)
        changes["budget_ratio"] = None if budget is None else budget / 100
    policy = _merge(base, changes)
    if backoff is not None and policy.backoff_initial_s > policy.backoff_max_s:
        r.problem(backoff, join(path, "backoff"), f"initial ({policy.backoff_initial_s:g}s) must not be "
                  f"longer than max ({policy.backoff_max_s:g}s)")
    return policy


def _retry_on(r: Reader, node: Node, path: str) -> dict[str, object]:
    statuses: set[int] = set()
    words: set[str] = set()
    ok = node.kind == "list"
    for where, item in r.items(node, path):
        text = item.text.strip() if item.kind == "scalar" and item.type in ("str", "int") else ""
        if item.type == "str" and text in ("connect-error", "timeout"):
            words.add(text)
        elif text.isdigit() and 500 <= int(text) <= 599:
            statuses.add(int(text))
        else:
            r.problem(item, where, f"{_RETRY_ON}, found {describe(item)}")
            ok = False
    if not ok:
        return {"retry_on_statuses": None}
    return {
        "retry_on_connect_error": "connect-error" in words,
        "retry_on_timeout": "timeout" in words,
        "retry_on_statuses": frozenset(statuses),
    }


def methods(r: Reader, node: Node, path: str) -> frozenset[str] | None:
    """HTTP methods, upper-cased; None when any of them is wrong."""
    found = [r.text(item, where, values.token) for where, item in r.items(node, path)]
    if node.kind != "list" or None in found:
        return None
    return frozenset(method.upper() for method in found)  # type: ignore[union-attr]


def breaker(r: Reader, node: Node, path: str, base: BreakerPolicy) -> BreakerPolicy:
    fields = r.mapping(node, path, BREAKER_KEYS) or {}
    changes: dict[str, object] = {}
    for key in ("failure_threshold", "success_threshold"):
        if key in fields:
            changes[key] = r.integer(fields[key], join(path, key), 1)
    if "recovery_timeout" in fields:
        changes["recovery_timeout_s"] = r.value(fields["recovery_timeout"], join(path, "recovery_timeout"),
                                                values.duration)
    return _merge(base, changes)


def _merge(base: P, changes: dict[str, object]) -> P:
    # A key that failed to read is already a problem; keeping the base value
    # lets the rest of the file be checked against something sensible.
    return dataclasses.replace(base, **{k: v for k, v in changes.items() if v is not None})


def limits(r: Reader, node: Node, path: str) -> Limits:
    fields = r.mapping(node, path, tuple(LIMIT_FIELDS)) or {}
    changes: dict[str, object] = {}
    for key, value in fields.items():
        field, kind = LIMIT_FIELDS[key]
        if kind == "size":
            changes[field] = r.value(value, join(path, key), values.size)
        elif kind == "duration":
            changes[field] = r.value(value, join(path, key), values.duration)
        else:
            changes[field] = r.integer(value, join(path, key), 1)
    return dataclasses.replace(Limits(), **{k: v for k, v in changes.items() if v is not None})


def paths(r: Reader, node: Node, path: str) -> EncodedSlash | None:
    """The encoded-slash policy of `paths: {encoded_slash: reject|keep}` (None when it is wrong)."""
    fields = r.mapping(node, path, ("encoded_slash",)) or {}
    if "encoded_slash" not in fields:
        return "reject"
    return r.choice(fields["encoded_slash"], join(path, "encoded_slash"), ("reject", "keep"))  # type: ignore[return-value]


def access_log(r: Reader, node: Node, path: str) -> AccessLog:
    fields = r.mapping(node, path, ("enabled", "format")) or {}
    enabled = r.boolean(fields["enabled"], join(path, "enabled")) if "enabled" in fields else None
    log_format = r.choice(fields["format"], join(path, "format"), ("plain", "json")) if "format" in fields else None
    default = AccessLog()
    return AccessLog(
        enabled=default.enabled if enabled is None else enabled,
        format=log_format or default.format,  # type: ignore[arg-type]
    )


def trusted_proxies(r: Reader, node: Node, path: str) -> tuple[IPNetwork, ...]:
    found = [r.text(item, where, values.network) for where, item in r.items(node, path)]
    return tuple(net for net in found if net is not None)

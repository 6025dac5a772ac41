"""`strangler explain`: which route and upstream would take a request, and why."""

from __future__ import annotations

import sys
from http import HTTPStatus
from urllib.parse import urlsplit

from .config.loader import ConfigError, load_config
from .config.model import COHORT_COOKIE, Config, Route
from .config.template import decoded
from .errors import ProxyError
from .headers import check_host, client_address
from .paths import PathForms, covers, forwarded_path, normalize_path, path_forms
from .routing import RequestHead, check_method, host_matches, route_matches
from .split import BUCKETS, SplitTable, bucket_of
from .sticky import cohort_of, cookie_value


def explain_request(path: str, method: str, url: str, header_args: list[str], out=sys.stdout,
                    client_ip: str | None = None) -> int:
    try:
        config = load_config(path)
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    headers: list[tuple[bytes, bytes]] = []
    for item in header_args:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            print(f"strangler explain: header {item!r} is not 'Name: value'", file=sys.stderr)
            return 2
        headers.append((name.strip().lower().encode("latin-1"), value.strip().encode("latin-1")))
    parts = urlsplit(url if "://" in url else "http://" + (url if not url.startswith("/") else "localhost" + url))
    if parts.hostname and not any(name == b"host" for name, _ in headers) and "://" in url:
        headers.append((b"host", parts.netloc.encode("latin-1")))
    raw_path = (parts.path or "/").encode("latin-1")
    say = lambda line="": print(line, file=out)  # noqa: E731
    try:
        # As the proxy refuses before routing; a request given as a bare path may have no Host.
        check_method(method.upper())
        check_host(headers, "1.0")
        forms = path_forms(raw_path) if any(route.encoded_slash == "keep" for route in config.routes) else None
        normalized = normalize_path(raw_path) if forms is None else forms.matched
    except ProxyError as error:
        say(f"{method.upper()} {parts.path}: {error.status} {HTTPStatus(error.status).phrase} ({error.detail})")
        return 1
    head = RequestHead(method.upper(), normalized, headers)
    say(f"request: {head.method} {normalized}" + (f"?{parts.query}" if parts.query else "")
        + (f"  (normalized from {parts.path})" if normalized != parts.path else ""))
    for index, route in enumerate(config.routes):
        if route_matches(route, head):
            return _explain_route(say, config, index, route, head, client_ip, forms)
        say(f"  routes[{index}] {route.name}: no ({_why_not(route, head)})")
    say("no route matches: the proxy answers 404")
    return 1


def _why_not(route: Route, head: RequestHead) -> str:
    match = route.match
    if match.template is not None:
        if match.template.match(head.path) is None:
            return f"path does not fit {match.path}"
    elif not covers(match.path, head.path):
        return f"path is not under {match.path}"
    if match.methods is not None and head.method not in match.methods:
        return f"method {head.method} not in {', '.join(sorted(match.methods))}"
    if match.host is not None and not host_matches(match.host, head.host):
        return f"host {head.host!r} is not {match.host!r}"
    for name, value in match.headers:
        if head.header(name) != value:
            return f"header {name} is {head.header(name)!r}, not {value!r}"
    return "?"


def _explain_route(say, config: Config, index: int, route: Route, head: RequestHead, peer: str | None,
                   forms: PathForms | None) -> int:
    template = route.match.template
    say(f"route: {route.name} (routes[{index}], {config.source}:{route.line}): "
        + (f"path fits {template.text}" if template is not None else f"path under {route.match.path}")
        + (f", method in {', '.join(sorted(route.match.methods))}" if route.match.methods else "")
        + (f", host {route.match.host}" if route.match.host else "")
        + "".join(f", {name}: {value}" for name, value in route.match.headers))
    try:
        forwarded = forwarded_path(head.path, forms, route)
    except ProxyError as error:
        say(f"{error.status} {HTTPStatus(error.status).phrase} ({error.detail})")
        return 1
    captures = template.match(head.path) if template is not None else None
    if captures is not None:
        say("captures: " + ", ".join(f"{name}={decoded(value)!r}" for name, value in captures.items()))
    if route.compose:
        _explain_parts(say, config, route, captures or {})
        return 0
    say(f"forwarded path: {forwarded}")
    table = SplitTable(route.name, route.split)
    start = 0
    ranges = []
    for name, bound in zip(table.upstreams, table.bounds):
        percent = dict(route.split)[name]
        ranges.append(f"{name} {percent:g}% (buckets {start}-{bound - 1})")
        start = bound
    say("split: " + ", ".join(ranges) + f" of {BUCKETS}")
    chosen: str | None = None           # None: placed at random
    if not table.is_split:
        chosen = table.upstreams[0]
        say(f"upstream: {chosen} (the only one with a share)")
    else:
        sticky = route.sticky
        key, source = _key(sticky.kind, sticky.name, head, config, peer)
        if key is None:
            extra = " (a new strangler_cohort cookie would be issued, and its id is the key from then on)" \
                if sticky.kind == "cohort" else ""
            why = "no key in this request" if sticky.kind != "client-ip" else "no client address given (--client-ip IP)"
            sent = cookie_value(head, COHORT_COOKIE) if sticky.kind == "cohort" else None
            if sent is not None:
                why = (f"cookie {COHORT_COOKIE}={sent!r} is not a cohort id (16 to 64 lowercase hex digits), "
                       "so it counts as none")
            say(f"sticky: {sticky.describe()}: {why} -> placed by weight at random{extra}")
        else:
            bucket = bucket_of(route.name, key)
            chosen = table.owner(bucket)
            say(f"sticky: {sticky.describe()} = {key!r} ({source}) -> bucket {bucket} -> {chosen}")
    _say_upstreams(say, config, route)
    if route.fallback:
        say(f"fallback: {route.fallback}, when the chosen upstream's breaker is open or its bulkhead is full, or it "
            "failed and the request can be replayed")
    if route.shadow is not None:
        say(_shadow_line(config, route, head.method, chosen))
    return 0


def _shadow_line(config: Config, route: Route, method: str, chosen: str | None) -> str:
    copy = route.shadow
    assert copy is not None
    if method not in copy.methods:
        return f"shadow: not copied ({method} is not in shadow.methods: {', '.join(sorted(copy.methods))})"
    if chosen == copy.upstream:
        return f"shadow: not copied ({copy.upstream} answers this request itself)"
    if copy.percent <= 0:
        return "shadow: not copied (shadow.percent is 0)"
    share = "always" if copy.percent >= 100 else f"sampled at random, {copy.percent:g}% of the time"
    unless = f", unless {copy.upstream} answers it itself" if chosen is None else ""
    return (f"shadow: a copy goes to {copy.upstream}={config.upstream(copy.upstream).url} ({share}{unless}), "
            "marked X-Strangler-Shadow: 1; its answer is compared with the client's, never sent")


def _say_upstreams(say, config: Config, route: Route) -> None:
    say("upstreams: " + ", ".join(f"{u.name}={u.url}" for u in config.upstreams if u.name in route.upstream_names))


def _explain_parts(say, config: Config, route: Route, captures: dict[str, str]) -> None:
    say(f"composite: {len(route.compose)} parts fetched at once with GET, answered as one JSON object"
        + (f" within {route.timeout_s:g}s" if route.timeout_s is not None else ""))
    for part in route.compose:
        try:
            target = part.target.fill(captures)
        except ProxyError as error:
            target = f"(none: {error.detail}; the proxy answers 400)"
        kind = "required: its failure fails the whole" if part.required else "optional: null when it fails"
        say(f"  part {part.name}: {part.upstream} GET {target} ({kind})")
    _say_upstreams(say, config, route)


def _key(kind: str, name: str | None, head: RequestHead, config: Config, peer: str | None) -> tuple[str | None, str]:
    if kind == "cohort":
        return cohort_of(head), f"cookie {COHORT_COOKIE}"
    if kind == "cookie":
        return cookie_value(head, name or ""), f"cookie {name}"
    if kind == "header":
        return head.header((name or "").lower()), f"header {name}"
    if kind == "client-ip":
        if peer is None:
            return None, "client address"
        client = client_address(peer, head.raw_headers, config.trusted_proxies)
        return client, "client address" + (f", from X-Forwarded-For through trusted proxy {peer}" if client != peer else "")
    return None, "none"

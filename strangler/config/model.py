"""The route rules as frozen values: parsed once, never mutated, swapped whole on reload."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

# The policies are the resilience library's own values; routes carry them as they are.
from resilience.policy import DEFAULT_RETRY_METHODS, BreakerPolicy, RetryPolicy  # noqa: F401 - re-exported

if TYPE_CHECKING:
    from .template import PartTarget, PathTemplate

COHORT_COOKIE = "strangler_cohort"
MAX_REPLAY_BODY_BYTES = 64 * 1024
MAX_PART_BODY_BYTES = 1024 * 1024     # a composite part's answer body, by default

StickyKind = Literal["cohort", "cookie", "header", "client-ip", "none"]
# What a path with an encoded slash (%2F) gets: 400, or matched with %2F inside its segment and forwarded as sent.
EncodedSlash = Literal["reject", "keep"]
OnBreach = Literal["rollback", "hold"]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerTls:
    """A listener's certificate chain and key (PEM files), read again when they change on disk."""

    cert: str                      # paths as resolved against the config file's directory
    key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Address:
    host: str
    port: int
    tls: ListenerTls | None = None     # None: plain HTTP


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamTls:
    """How an https:// upstream's certificate is checked."""

    ca_file: str | None = None     # None: the system's CA store
    server_name: str | None = None  # SNI and the name checked; None: the url's host
    verify: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthCheck:
    path: str
    interval_s: float = 5.0
    timeout_s: float = 2.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Upstream:
    name: str
    url: str                       # origin only: scheme://host[:port], no path
    connect_timeout_s: float = 2.0
    timeout_s: float = 30.0        # longest wait for the upstream's next bytes
    max_concurrent: int = 256      # bulkhead
    health: HealthCheck | None = None
    tls: UpstreamTls = UpstreamTls()   # used by https:// urls only
    role: Literal["legacy"] | None = None   # the monolith: where "back to legacy" sends traffic


@dataclass(frozen=True, slots=True, kw_only=True)
class Sticky:
    kind: StickyKind = "cohort"
    name: str | None = None        # cookie or header name for kind cookie/header

    def describe(self) -> str:
        return f"{self.kind}:{self.name}" if self.name else self.kind


@dataclass(frozen=True, slots=True, kw_only=True)
class Match:
    path: str = "/"                                 # normalized prefix, segment boundary
    methods: frozenset[str] | None = None           # None: any method
    headers: tuple[tuple[str, str], ...] = ()       # (lower-case name, exact value)
    host: str | None = None                         # lower-case, without port
    template: PathTemplate | None = None            # when path has {name} segments (path is then its text)


@dataclass(frozen=True, slots=True, kw_only=True)
class Part:
    """One part of a composite route's answer: fetched with GET from `upstream` at `target`."""

    name: str
    upstream: str
    target: PartTarget
    required: bool = False
    max_body_bytes: int = MAX_PART_BODY_BYTES


# Methods that change nothing (RFC 9110 9.2.1): only these are copied to a shadow unless writes are allowed.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
DEFAULT_SHADOW_IGNORE_HEADERS = frozenset({"date", "server", "x-request-id", "set-cookie", "content-length"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ShadowCompare:
    ignore_headers: frozenset[str] = DEFAULT_SHADOW_IGNORE_HEADERS   # lower-case names
    ignore_fields: tuple[str, ...] = ()                              # JSONPath expressions
    learn_noise: bool = False                                        # `noise: learn`


@dataclass(frozen=True, slots=True, kw_only=True)
class Shadow:
    """A route's `shadow:` block: which requests are copied where, and how the answers are compared."""

    upstream: str
    percent: float = 100.0
    methods: frozenset[str] = frozenset({"GET", "HEAD"})
    allow_writes: bool = False
    max_concurrent: int = 16                       # copies in flight; past it a copy is skipped
    max_body_bytes: int = 1024 * 1024              # answers over this are not compared
    compare: ShadowCompare = ShadowCompare()


@dataclass(frozen=True, slots=True, kw_only=True)
class Gates:
    """What a ramp's window must show before its next step; a gate left at None is off."""

    min_requests: int = 100                                 # fewer for `to` in the window: inconclusive
    max_error_rate_percent: float | None = None             # of `to`'s requests
    max_error_rate_increase_percent: float | None = None    # `to`'s error rate minus legacy's, same window
    max_p95_ratio: float | None = None                      # p95 of `to` over legacy's
    min_shadow_match_percent: float | None = None           # only on a route with shadow on


@dataclass(frozen=True, slots=True, kw_only=True)
class Ramp:
    """Moves a route's share from its legacy upstream to `to`, one step per window that passes its gates."""

    to: str
    legacy: str                                     # the upstream with role: legacy, the other side of the split
    steps: tuple[float, ...]                        # the share of `to` at each step, increasing
    every_s: float                                  # how long each step is watched
    gates: Gates = Gates()
    on_breach: OnBreach = "rollback"
    id: str = ""                                    # of the ramp block and the route's split: edit either, start anew

    def shares(self, split: tuple[tuple[str, float], ...], percent: float) -> tuple[tuple[str, float], ...]:
        """The split with `to` at `percent` and legacy taking the rest, in the split's own order."""
        return tuple((name, percent if name == self.to else 100.0 - percent) for name, _ in split)


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    name: str
    match: Match
    split: tuple[tuple[str, float], ...]            # (upstream, percent) in file order, sums to 100
    fallback: str | None = None
    sticky: Sticky = field(default_factory=Sticky)
    strip_prefix: bool = False
    timeout_s: float | None = None                  # response must start within this, all attempts together
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    max_body_bytes: int | None = None               # None: limits.max_body_bytes
    encoded_slash: EncodedSlash = "reject"          # its own paths.encoded_slash, else the top-level one
    shadow: Shadow | None = None                    # copies of sampled requests, compared
    ramp: Ramp | None = None
    compose: tuple[Part, ...] = ()                  # a composite route's parts (its split is then empty)
    line: int = 0                                   # where the route starts in the file

    @property
    def upstream_names(self) -> tuple[str, ...]:
        names = [name for name, _ in self.split]
        if self.fallback and self.fallback not in names:
            names.append(self.fallback)
        names.extend(part.upstream for part in self.compose)
        return tuple(dict.fromkeys(names))


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Protection against hostile or broken clients, with safe defaults."""

    max_url_bytes: int = 8192
    max_header_bytes: int = 64 * 1024
    max_header_count: int = 100
    max_body_bytes: int = 100 * 1024 * 1024
    header_timeout_s: float = 10.0
    body_idle_timeout_s: float = 30.0
    max_concurrent_requests: int = 4096
    websocket_idle_timeout_s: float = 3600.0        # a tunnel with no bytes either way for this long is closed
    websocket_drain_timeout_s: float = 5.0          # after SIGTERM, open tunnels are closed (1001) after this


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessLog:
    enabled: bool = True
    format: Literal["plain", "json"] = "plain"


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    version: int = 1
    listen: Address = Address(host="127.0.0.1", port=8000)
    admin: Address = Address(host="127.0.0.1", port=9000)
    upstreams: tuple[Upstream, ...] = ()
    routes: tuple[Route, ...] = ()
    trusted_proxies: tuple[IPNetwork, ...] = ()
    expose_headers: bool = True
    limits: Limits = Limits()
    access_log: AccessLog = AccessLog()
    encoded_slash: EncodedSlash = "reject"          # paths.encoded_slash: every route's unless it sets its own
    admin_token: str | None = None  # admin.token; STRANGLER_ADMIN_TOKEN, when set, takes its place
    state_dir: str = "var/strangler"   # ramp progress and roll back all; relative to the config file's folder
    source: str = "<string>"        # file name as given, for messages
    sha256: str = ""                # of the file's bytes: the config version users see
    warnings: tuple[str, ...] = ()  # FILE:LINE:COL: path: message, e.g. shadowed routes

    @property
    def legacy(self) -> str | None:
        """The name of the upstream with role: legacy, if one has it."""
        return next((upstream.name for upstream in self.upstreams if upstream.role == "legacy"), None)

    def legacy_side(self, route: Route) -> str | None:
        """The upstream that is `route`'s monolith: the one with role: legacy, else the one named legacy, else the
        route's fallback (None when there is none)."""
        if self.legacy is not None:
            return self.legacy
        if any(upstream.name == "legacy" for upstream in self.upstreams):
            return "legacy"
        return route.fallback

    def upstream(self, name: str) -> Upstream:
        for upstream in self.upstreams:
            if upstream.name == name:
                return upstream
        raise KeyError(name)

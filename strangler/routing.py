"""Route matching: routes in file order, the first match wins."""

from __future__ import annotations

from collections.abc import Sequence

from .config.model import Route
from .errors import ProxyError, Reason
from .paths import covers

# Refused before routing, whatever a route allows: CONNECT asks for a tunnel, which a pooled upstream
# connection must never become, and TRACE has the upstream echo the request, cookies and credentials
# included, into a page's reach.
REFUSED_METHODS = frozenset({"CONNECT", "TRACE"})


def check_method(method: str) -> None:
    """Refuse the methods no route may forward (405)."""
    if method in REFUSED_METHODS:
        raise ProxyError(f"{method} is not forwarded", reason=Reason.METHOD_NOT_ALLOWED)


class RequestHead:
    """What matching and sticky assignment read from a request, computed lazily."""

    __slots__ = ("method", "path", "raw_headers", "_host", "_index")

    def __init__(self, method: str, path: str, raw_headers: Sequence[tuple[bytes, bytes]]) -> None:
        self.method = method
        self.path = path
        self.raw_headers = raw_headers
        self._host: str | None | bool = False
        self._index: dict[str, str] | None = None

    def header(self, lower_name: str) -> str | None:
        """The first value of a header (matching and sticky keys want one value)."""
        if self._index is None:
            index: dict[str, str] = {}
            for name, value in self.raw_headers:
                index.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
            self._index = index
        return self._index.get(lower_name)

    @property
    def host(self) -> str | None:
        """The Host header, lower-cased, without its port or the trailing dot of a fully qualified name."""
        if self._host is False:
            host = self.header("host")
            if host is not None:
                host = host.strip().lower()
                if host.startswith("["):        # IPv6 literal
                    host = host.split("]", 1)[0] + "]"
                else:
                    host = host.rsplit(":", 1)[0] if ":" in host else host
                    if host.endswith("."):      # shop.example.com. is shop.example.com
                        host = host[:-1]
            self._host = host
        return self._host  # type: ignore[return-value]


def host_matches(route_host: str, request_host: str | None) -> bool:
    """The request's host (see RequestHead.host) is the route's, also when the route's has a trailing dot."""
    return request_host == route_host or request_host is not None and request_host + "." == route_host


def route_matches(route: Route, request: RequestHead) -> bool:
    match = route.match
    # A template's path holds '{', which no normalized path does, so a prefix route pays nothing more.
    if not covers(match.path, request.path) and (match.template is None or match.template.match(request.path) is None):
        return False
    if match.methods is not None and request.method not in match.methods:
        return False
    if match.host is not None and not host_matches(match.host, request.host):
        return False
    for name, value in match.headers:
        if request.header(name) != value:
            return False
    return True


class RoutingTable:
    """The routes of one config, in file order."""

    __slots__ = ("routes",)

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = tuple(routes)

    def match(self, request: RequestHead) -> Route | None:
        for route in self.routes:
            if route_matches(route, request):
                return route
        return None

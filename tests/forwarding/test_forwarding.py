"""What the upstream receives and what the client gets back, through `strangler run`."""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Iterator

import httpx
import pytest

from tests.support.configs import catch_all
from tests.support.rawhttp import RawConnection, ThreadedEvent, raw_request
from tests.support.servers import ProxyProcess, Recorder, ThreadedServer, free_port

PROBLEM_FIELDS = {"type", "title", "status", "detail", "route", "upstream"}
GZIPPED = gzip.compress(random.Random(3).randbytes(20_000) + b"hello " * 5000, mtime=0)


def _headers_of(scope) -> list[tuple[str, str]]:
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]]


def echo_app(recorder: Recorder, name: str = "echo"):
    """Answers with JSON describing the request exactly as it arrived; some paths answer specially."""
    async def app(scope, receive, send):
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen = {
            "upstream": name,
            "method": scope["method"],
            "raw_path": scope["raw_path"].decode("latin-1"),
            "query_string": scope["query_string"].decode("latin-1"),
            "headers": _headers_of(scope),
            "body": body.decode("latin-1"),
        }
        recorder.add(**seen)
        path = scope["path"]
        headers = [(b"content-type", b"application/json")]
        payload = json.dumps(seen).encode()
        if path == "/cookies":
            headers += [(b"set-cookie", b"session=abc; Path=/; HttpOnly"),
                        (b"set-cookie", b"theme=dark; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Path=/")]
        elif path == "/gzip":
            headers = [(b"content-type", b"text/plain"), (b"content-encoding", b"gzip"), (b"vary", b"Accept-Encoding")]
            payload = GZIPPED
        headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
    return app


@pytest.fixture
def echo(start_upstream) -> tuple[Recorder, object]:
    recorder = Recorder()
    return recorder, start_upstream(echo_app(recorder))


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Iterator[tuple[Recorder, ProxyProcess]]:
    """One echo upstream and one proxy for the tests that need no config of their own (startup is slow)."""
    recorder = Recorder()
    with ThreadedServer(echo_app(recorder)) as upstream:
        config = tmp_path_factory.mktemp("shared") / "routes.yaml"
        config.write_text(f"""
version: 1
upstreams:
  legacy: {{url: "{upstream.url}"}}
routes:
  - name: orders
    match: {{path: /api/orders}}
    to: legacy
  - name: svc
    match: {{path: /svc}}
    to: legacy
    strip_prefix: true
  - name: all
    match: {{path: /}}
    to: legacy
""")
        with ProxyProcess(config) as proxy:
            yield recorder, proxy


def _lower_names(headers: list[tuple[str, str]]) -> list[str]:
    return [name.lower() for name, _ in headers]


def _values(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [value for key, value in headers if key.lower() == name]


# --- headers -----------------------------------------------------------------------------------

def test_two_set_cookie_headers_arrive_as_two(shared):
    _, proxy = shared
    response = raw_request(proxy.port, "GET", "/cookies")
    assert response.status == 200
    assert response.header_values("set-cookie") == [
        "session=abc; Path=/; HttpOnly", "theme=dark; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Path=/"]
    assert httpx.get(proxy.url + "/cookies").headers.get_list("set-cookie") == response.header_values("set-cookie")


def test_gzip_body_arrives_byte_for_byte(shared):
    _, proxy = shared
    with httpx.Client() as client, client.stream("GET", proxy.url + "/gzip",
                                                 headers={"Accept-Encoding": "gzip"}) as response:
        raw = b"".join(response.iter_raw())
    assert response.headers["content-encoding"] == "gzip"
    assert raw == GZIPPED
    assert int(response.headers["content-length"]) == len(GZIPPED)
    # A client that did not ask for gzip still gets what the upstream sent: the proxy never decodes.
    plain = raw_request(proxy.port, "GET", "/gzip")
    assert plain.body == GZIPPED and plain.header("content-encoding") == "gzip"


def test_hop_by_hop_and_connection_named_headers_do_not_reach_the_upstream(shared):
    recorder, proxy = shared
    response = raw_request(proxy.port, "GET", "/h", [
        ("Host", "Shop.Example.com:8080"),
        ("Connection", "keep-alive, X-Drop-Me, X-Forwarded-For"),
        ("X-Drop-Me", "secret"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "trailers"),
        ("Trailer", "X-Checksum"),
        ("Upgrade", "h2c"),
        ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
        ("Proxy-Connection", "keep-alive"),
        ("X-Forwarded-For", "6.6.6.6"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "evil.example"),
        ("Via", "1.0 fred"),
        ("X-Kept", "yes"),
        ("X-Kept", "twice"),
    ])
    assert response.status == 200
    seen = recorder.requests[-1]["headers"]
    names = _lower_names(seen)
    for gone in ("x-drop-me", "keep-alive", "te", "trailer", "upgrade", "proxy-authorization", "proxy-connection"):
        assert gone not in names, f"{gone} reached the upstream: {seen}"
    # The client library may add its own Connection; the client's never arrives.
    assert not any("x-drop-me" in value.lower() for value in _values(seen, "connection"))
    assert _values(seen, "host") == ["Shop.Example.com:8080"]
    # The client is untrusted: its forwarding headers are replaced, not appended to, despite naming XFF in Connection.
    assert _values(seen, "x-forwarded-for") == ["127.0.0.1"]
    assert _values(seen, "x-forwarded-proto") == ["http"]
    assert _values(seen, "x-forwarded-host") == ["Shop.Example.com:8080"]
    assert _values(seen, "via") == ["1.0 fred, 1.1 strangler"]
    assert _values(seen, "x-kept") == ["yes", "twice"]
    # Nothing the client did not send (client-library defaults) reaches the upstream.
    for added in ("user-agent", "accept-encoding", "accept", "content-type", "content-length", "cookie"):
        assert added not in names, f"{added} was added: {seen}"


def test_trusted_proxy_x_forwarded_for_is_appended(echo, start_proxy):
    recorder, upstream = echo
    proxy = start_proxy(catch_all(upstream.url, top="trusted_proxies: [127.0.0.1/32]"))
    response = raw_request(proxy.port, "GET", "/t", [
        ("Host", "internal:8000"),
        ("X-Forwarded-For", "203.0.113.9"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "www.example.com"),
    ])
    assert response.status == 200
    seen = recorder.requests[-1]["headers"]
    assert _values(seen, "x-forwarded-for") == ["203.0.113.9, 127.0.0.1"]
    assert _values(seen, "x-forwarded-proto") == ["https"]
    assert _values(seen, "x-forwarded-host") == ["www.example.com"]
    assert _values(seen, "host") == ["internal:8000"]


def test_proxied_responses_name_the_route_and_upstream(shared):
    _, proxy = shared
    with httpx.Client(base_url=proxy.url) as client:
        for path, route in (("/anything", "all"), ("/api/orders/7", "orders"), ("/svc/x", "svc")):
            response = client.get(path)
            assert response.status_code == 200
            assert response.headers["x-strangler-route"] == route
            assert response.headers["x-strangler-upstream"] == "legacy"


# --- paths and queries -------------------------------------------------------------------------

def test_upstream_sees_the_normalized_path_and_the_exact_query(shared):
    recorder, proxy = shared
    cases = [
        # (target sent, route, path the upstream sees, query the upstream sees)
        ("/api/orders/./7//items/%7Euser?q=a%20b+c%2Bd&t=%7e&e=&&flag&s=/?x&u=%E2%9C%93",
         "orders", "/api/orders/7/items/~user", "q=a%20b+c%2Bd&t=%7e&e=&&flag&s=/?x&u=%E2%9C%93"),
        ("/api/orders/%2e/8?x=%2F", "orders", "/api/orders/8", "x=%2F"),
        ("/api/orders/../admin?who=me", "all", "/api/admin", "who=me"),
        ("/api/orders/%2e%2e/admin", "all", "/api/admin", ""),
        ("/api/orders/7/%2E%2E/%2e%2e/admin", "all", "/api/admin", ""),
        ("/api/ordersx", "all", "/api/ordersx", ""),
        ("/a%20b/c%3fd?%20", "all", "/a%20b/c%3Fd", "%20"),
        ("/svc/a/b?x=1+2", "svc", "/a/b", "x=1+2"),
        ("/svc//a/./b/", "svc", "/a/b/", ""),
        ("/svc?x=1", "svc", "/", "x=1"),
        ("/svc", "svc", "/", ""),
        ("//evil.example/x", "all", "/evil.example/x", ""),
    ]
    with RawConnection(proxy.port) as connection:
        for target, route, path, query in cases:
            response = connection.request("GET", target)
            assert response.status == 200, (target, response.body)
            assert response.header("x-strangler-route") == route, target
            seen = recorder.requests[-1]
            assert (seen["raw_path"], seen["query_string"]) == (path, query), target


def test_path_that_cannot_be_normalized_gets_400_problem(shared):
    recorder, proxy = shared
    before = len(recorder)
    for target in ("/a/%2e%2e/%2e%2e/b", "/a/%2Fetc", "/a%5Cb", "/a/%00", "/a/%zz", "/../x"):
        response = raw_request(proxy.port, "GET", target)
        assert response.status == 400, target
        assert response.header("content-type") == "application/problem+json"
        problem = json.loads(response.body)
        assert PROBLEM_FIELDS <= problem.keys()
        assert problem["status"] == 400
        assert problem["upstream"] is None
    assert len(recorder) == before      # none of them reached the upstream


# --- bodyless responses ------------------------------------------------------------------------

async def bodyless_app(scope, receive, send):
    """Served with h11, which (unlike httptools) lets a 304 carry Content-Length without a body."""
    path = scope["path"]
    if path == "/head":
        body = b"x" * 1000
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/plain"), (b"content-length", b"1000")]})
        await send({"type": "http.response.body", "body": body})      # uvicorn drops it for HEAD
    elif path == "/204":
        await send({"type": "http.response.start", "status": 204, "headers": [(b"x-done", b"1")]})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/304":
        await send({"type": "http.response.start", "status": 304, "headers": [
            (b"etag", b'"v1"'), (b"content-length", b"1234")]})
        await send({"type": "http.response.body", "body": b""})
    else:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})


def test_head_204_and_304_have_no_body_and_keep_the_connection_usable(start_upstream, start_proxy):
    upstream = start_upstream(bodyless_app, http="h11")
    proxy = start_proxy(catch_all(upstream.url))
    local_ports = set()
    with httpx.Client(base_url=proxy.url, timeout=5, limits=httpx.Limits(max_connections=1)) as client:
        def check(method: str, path: str, status: int) -> httpx.Response:
            response = client.request(method, path)
            assert response.status_code == status, (method, path)
            local_ports.add(response.extensions["network_stream"].get_extra_info("client_addr")[1])
            return response

        head = check("HEAD", "/head", 200)
        assert head.content == b"" and head.headers["content-length"] == "1000"
        assert check("GET", "/ok", 200).content == b"ok"
        no_content = check("GET", "/204", 204)
        assert no_content.content == b"" and no_content.headers["x-done"] == "1"
        assert check("GET", "/ok", 200).content == b"ok"
        not_modified = check("GET", "/304", 304)
        assert not_modified.content == b"" and not_modified.headers["etag"] == '"v1"'
        assert check("GET", "/ok", 200).content == b"ok"
        assert check("HEAD", "/head", 200).content == b""
        assert check("GET", "/ok", 200).content == b"ok"
    assert len(local_ports) == 1, "the proxy dropped the client's keep-alive connection"
    # On the wire: no stray bytes after any of them, which would become the next response.
    with RawConnection(proxy.port) as connection:
        for method, path in (("HEAD", "/head"), ("GET", "/204"), ("GET", "/304")):
            response = connection.request(method, path)
            assert response.body == b""
            assert connection.request("GET", "/ok").body == b"ok"
        assert connection.leftover() == b""


# --- errors made by the proxy ------------------------------------------------------------------

def _problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert PROBLEM_FIELDS <= problem.keys(), problem
    assert problem["status"] == status
    assert isinstance(problem["type"], str) and problem["type"]
    assert isinstance(problem["title"], str) and problem["title"]
    assert isinstance(problem["detail"], str) and problem["detail"]
    return problem


def test_no_matching_route_gives_404_problem(echo, start_proxy):
    recorder, upstream = echo
    proxy = start_proxy(f"""
version: 1
upstreams:
  legacy: {{url: "{upstream.url}"}}
routes:
  - name: orders
    match: {{path: /api/orders, methods: [GET]}}
    to: legacy
""")
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        for method, path in (("GET", "/elsewhere"), ("GET", "/api/ordersx"), ("POST", "/api/orders")):
            problem = _problem(client.request(method, path), 404)
            assert problem["route"] is None and problem["upstream"] is None
    assert len(recorder) == 0


def test_refused_connection_gives_502_problem(start_proxy):
    dead = free_port()      # nothing listens there
    proxy = start_proxy(f"""
version: 1
upstreams:
  orders: {{url: "http://127.0.0.1:{dead}", connect_timeout: 1s}}
routes:
  - name: orders
    match: {{path: /}}
    to: orders
""")
    response = httpx.get(proxy.url + "/api/orders/1", timeout=10)
    problem = _problem(response, 502)
    assert problem["route"] == "orders"
    assert problem["upstream"] == "orders"
    assert response.headers["x-strangler-upstream"] == "orders"


@pytest.fixture
def silent_upstream(start_upstream) -> Iterator[tuple[object, ThreadedEvent, Recorder]]:
    """An upstream that reads the request and then says nothing until teardown."""
    release = ThreadedEvent()
    recorder = Recorder()

    async def app(scope, receive, send):
        await receive()
        recorder.add(path=scope["path"])
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
        await send({"type": "http.response.body", "body": b"late"})

    upstream = start_upstream(app)
    yield upstream, release, recorder
    release.set()


def test_upstream_that_does_not_answer_in_time_gives_504_problem(silent_upstream, start_proxy):
    upstream, _, recorder = silent_upstream
    proxy = start_proxy(f"""
version: 1
upstreams:
  legacy: {{url: "{upstream.url}", timeout: 300ms}}
routes:
  - name: slow
    match: {{path: /}}
    to: legacy
""")
    response = httpx.get(proxy.url + "/report", timeout=10)
    problem = _problem(response, 504)
    assert problem["route"] == "slow"
    assert problem["upstream"] == "legacy"
    assert len(recorder) >= 1       # it did reach the upstream, which stayed silent


# --- sticky cohort -----------------------------------------------------------------------------

def test_sticky_cohort_cookie_keeps_a_client_on_one_upstream(start_upstream, start_proxy):
    recorder = Recorder()
    legacy = start_upstream(echo_app(recorder, "legacy"))
    orders = start_upstream(echo_app(recorder, "orders"))
    proxy = start_proxy(f"""
version: 1
upstreams:
  legacy: {{url: "{legacy.url}"}}
  orders: {{url: "{orders.url}"}}
routes:
  - name: orders
    match: {{path: /}}
    split: {{orders: 50, legacy: 50}}
""")
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        def get(cookie: str | None = None) -> httpx.Response:
            client.cookies.clear()          # every request is a client of its own: no jar carries the cohort
            response = client.get("/api/orders", headers={"Cookie": cookie} if cookie else None)
            assert response.status_code == 200
            return response

        first = get()
        cookies = first.headers.get_list("set-cookie")
        assert len(cookies) == 1, cookies
        cookie = cookies[0]
        assert cookie.startswith("strangler_cohort=")
        attributes = [part.strip().lower() for part in cookie.split(";")[1:]]
        assert "httponly" in attributes
        assert "samesite=lax" in attributes
        cohort = cookie.split(";")[0]
        side = first.headers["x-strangler-upstream"]
        assert side == first.json()["upstream"]

        for _ in range(20):
            again = get(f"theme=dark; {cohort}")
            assert again.headers["x-strangler-upstream"] == side
            assert again.json()["upstream"] == side
            assert "set-cookie" not in again.headers      # a known cohort is not reissued

        # Sticky, not stuck: new clients land on both sides of a 50/50 split.
        sides = {get().headers["x-strangler-upstream"] for _ in range(20)}
        assert sides == {"legacy", "orders"}

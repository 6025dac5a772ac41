"""Retries against real failing upstreams: what is replayed, how often, and what the client finally sees."""

from __future__ import annotations

import httpx

from tests.support.configs import one_route
from tests.support.faults import RefusedPort, ResetBeforeAnswer, Scripted, faults  # noqa: F401  (fixture)
from tests.support.metrics import scrape


def test_post_answered_503_is_received_exactly_once_and_not_retried_nor_replayed(start_proxy, faults):
    new = faults(Scripted(then=503))
    legacy = faults(Scripted())
    proxy = start_proxy(one_route(new.url, legacy.url, fallback=True, path="/api/orders",
                                  defaults={"retry": "{attempts: 3, backoff: {initial: 10ms, max: 50ms}}"}))
    response = httpx.post(proxy.url + "/api/orders", content=b'{"item": 7}', timeout=10)
    # The upstream may have acted on it: neither retried nor sent to the fallback; its answer as it is.
    assert response.status_code == 503
    assert response.headers["x-upstream-own"] == "503"
    assert response.headers["x-strangler-upstream"] == "new"
    assert new.count == 1
    assert new.received[0].method == "POST"
    assert new.received[0].body == b'{"item": 7}'
    assert legacy.count == 0
    metrics = scrape(proxy.admin_url)
    assert metrics.value("strangler_retries_total", route="orders") == 0
    assert metrics.value("strangler_fallbacks_total", route="orders") == 0
    assert metrics.value("strangler_upstream_attempts_total", route="orders", upstream="new", outcome="http_5xx") == 1


def _body_of(size: int, streamed: bool):
    body = bytes(i % 251 for i in range(size))
    if not streamed:
        return body, body

    def chunks():
        for start in range(0, size, 16 * 1024):
            yield body[start:start + 16 * 1024]
    return body, chunks()


_POST_BODIES = {            # route: (size, streamed from the client without a Content-Length)
    "small": (11, False),
    "large": (200 * 1024, False),           # over the 64 KiB kept for replay
    "large-chunked": (200 * 1024, True),
}


def test_post_to_a_refused_port_is_retried_then_falls_back(start_proxy, faults):
    refused = {name: faults(RefusedPort()) for name in _POST_BODIES}
    legacy = faults(Scripted(body=b"legacy took it"))
    upstreams = "".join(f'  new-{name}: {{url: "{port.url}", connect_timeout: 1s}}\n'
                        for name, port in refused.items())
    routes = "".join(f"  - {{name: {name}, match: {{path: /{name}}}, to: new-{name}, fallback: legacy}}\n"
                     for name in _POST_BODIES)
    proxy = start_proxy(f"""
version: 1
upstreams:
{upstreams}  legacy: {{url: "{legacy.url}"}}
defaults:
  retry: {{attempts: 3, backoff: {{initial: 10ms, max: 50ms}}}}
routes:
{routes}""")
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        for index, (name, (size, streamed)) in enumerate(_POST_BODIES.items()):
            body, content = _body_of(size, streamed)
            response = client.post(f"/{name}", content=content)
            # A refused connection never reached anyone: retrying and falling back are safe even for a
            # POST, and even for a body too large to keep, since not one byte of it was sent.
            assert response.status_code == 200, name
            assert response.text == "legacy took it"
            assert response.headers["x-strangler-upstream"] == "legacy"
            assert legacy.count == index + 1
            assert legacy.received[index].method == "POST"
            assert legacy.received[index].body == body, name

    metrics = scrape(proxy.admin_url)
    for name in _POST_BODIES:
        upstream = f"new-{name}"
        assert metrics.value("strangler_upstream_attempts_total", route=name, upstream=upstream,
                             outcome="connect_error") == 3, name
        assert metrics.value("strangler_retries_total", route=name, upstream=upstream) == 2, name
        assert metrics.value("strangler_fallbacks_total", route=name, from_upstream=upstream, to_upstream="legacy",
                             reason="connect_error") == 1, name


def test_retry_budget_caps_the_load_on_an_upstream_failing_every_request(start_proxy, faults):
    broken = faults(Scripted(then=503))
    proxy = start_proxy(one_route(broken.url, defaults={
        "retry": "{attempts: 3, backoff: {initial: 1ms, max: 5ms}, budget: 20%}",
        "circuit_breaker": "{failure_threshold: 100000}"}))
    requests = 200
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        for i in range(requests):
            assert client.get(f"/{i}").status_code == 503
    # Without the budget this would be 600 attempts.
    assert broken.count <= 1.2 * requests + 3, f"{broken.count} attempts for {requests} requests"
    metrics = scrape(proxy.admin_url)
    retries = metrics.value("strangler_retries_total", route="orders", upstream="new")
    assert retries > 0, "the budget's floor allows a few retries"
    assert broken.count == requests + retries
    assert metrics.value("strangler_upstream_attempts_total", route="orders", upstream="new",
                         outcome="http_5xx") == broken.count


def test_503_503_200_is_answered_200_and_a_503_after_the_last_try_goes_out_as_it_is(start_proxy, faults):
    flaky = faults(Scripted([503, 503], then=200, body=b"third time lucky"))
    broken = faults(Scripted(then=503))
    proxy = start_proxy(f"""
version: 1
upstreams:
  flaky: {{url: "{flaky.url}"}}
  broken: {{url: "{broken.url}"}}
defaults:
  retry: {{attempts: 3, backoff: {{initial: 10ms, max: 50ms}}}}
routes:
  - {{name: flaky, match: {{path: /flaky}}, to: flaky}}
  - {{name: broken, match: {{path: /broken}}, to: broken}}
""")
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        lucky = client.get("/flaky/orders/7")
        last = client.get("/broken/x")

    assert lucky.status_code == 200
    assert lucky.text == "third time lucky"
    assert [r.target for r in flaky.received] == ["/flaky/orders/7"] * 3

    # Retries ran out on the upstream's own answer: its body and headers, not a proxy-made problem.
    assert broken.count == 3
    assert last.status_code == 503
    assert last.text == "upstream's own 503 for request 2"
    assert last.headers["content-type"] == "text/plain; charset=utf-8"
    assert last.headers["x-upstream-own"] == "503"
    assert last.headers["retry-after"] == "7"
    assert last.headers["x-strangler-upstream"] == "broken"

    metrics = scrape(proxy.admin_url)
    assert metrics.value("strangler_retries_total", route="flaky", upstream="flaky") == 2
    assert metrics.value("strangler_upstream_attempts_total", route="flaky", upstream="flaky", outcome="http_5xx") == 2
    assert metrics.value("strangler_upstream_attempts_total", route="flaky", upstream="flaky", outcome="ok") == 1
    assert metrics.value("strangler_requests_total", route="flaky", upstream="flaky", method="GET", code="200") == 1
    assert metrics.value("strangler_retries_total", route="broken", upstream="broken") == 2
    assert metrics.value("strangler_requests_total", route="broken", upstream="broken", code="503") == 1
    assert metrics.value("strangler_proxy_errors_total", route="broken") == 0


def test_a_post_that_fell_back_and_reached_the_fallback_is_never_retried_there(start_proxy, faults):
    # The new upstream refuses (nothing sent: the fallback may take the POST). The fallback reads it whole
    # and resets without answering: it may have acted on it, so it must receive it exactly once, whatever
    # the refusal before it said (that error once leaked into the fallback's and made it look unsent).
    refused = faults(RefusedPort())
    legacy = faults(ResetBeforeAnswer())
    proxy = start_proxy(one_route(refused.url, legacy.url, fallback=True, path="/api/orders",
                                  defaults={"retry": "{attempts: 3, backoff: {initial: 10ms, max: 50ms}}"}))
    response = httpx.post(proxy.url + "/api/orders", content=b'{"item": 8}', timeout=10)
    assert response.status_code == 502
    assert response.json()["reason"] == "upstream_reset" and response.json()["upstream"] == "legacy"
    assert legacy.count == 1 and legacy.received[0].body == b'{"item": 8}'
    metrics = scrape(proxy.admin_url)
    assert metrics.value("strangler_fallbacks_total", route="orders", reason="connect_error") == 1
    assert metrics.value("strangler_retries_total", route="orders", upstream="legacy") == 0

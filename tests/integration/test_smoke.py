import httpx


async def hello(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


def test_request_reaches_upstream_through_proxy(start_upstream, start_proxy):
    upstream = start_upstream(hello)
    proxy = start_proxy(f"""
version: 1
upstreams:
  legacy: {{url: "{upstream.url}"}}
routes:
  - name: all
    match: {{path: /}}
    to: legacy
""")
    response = httpx.get(proxy.url + "/x")
    assert response.status_code == 200
    assert response.text == "hello"
    assert response.headers["x-strangler-upstream"] == "legacy"
    assert proxy.terminate() == 0

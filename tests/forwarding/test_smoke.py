import httpx

from tests.support.configs import catch_all
from tests.support.servers import Named


def test_request_reaches_upstream_through_proxy(start_upstream, start_proxy):
    upstream = start_upstream(Named("hello"))
    proxy = start_proxy(catch_all(upstream.url))
    response = httpx.get(proxy.url + "/x")
    assert response.status_code == 200
    assert response.text == "hello"
    assert response.headers["x-strangler-upstream"] == "legacy"
    assert proxy.terminate() == 0

"""TLS on both sides of the proxy, with certificates made for the test by trustme.

The public listener serves HTTPS from `listen.tls` and picks up a certificate swapped on disk
without a restart; upstreams are reached over TLS with their own CA and server name; a
certificate that does not check out is a 502 `tls_error`, counted, and opens the breaker.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.sync.client import connect

from tests.support.metrics import breaker_state, scrape
from tests.support.servers import ProxyProcess, ThreadedServer, wait_until


async def headers(request: Request) -> JSONResponse:
    return JSONResponse({name: value for name, value in request.headers.items()})


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect:
        pass


APP = Starlette(routes=[Route("/{path:path}", headers), WebSocketRoute("/ws/echo", echo)])


@dataclass
class Certs:
    ca: trustme.CA
    directory: Path

    def issue(self, name: str, *, common_name: str) -> tuple[Path, Path]:
        issued = self.ca.issue_cert("localhost", "127.0.0.1", common_name=common_name)
        cert, key = self.directory / f"{name}.pem", self.directory / f"{name}.key"
        issued.private_key_pem.write_to_path(key)
        issued.cert_chain_pems[0].write_to_path(cert)
        return cert, key

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


@dataclass
class Edge:
    certs: Certs
    proxy: ProxyProcess
    listener_cert: Path
    listener_key: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.proxy.port}"

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, verify=self.certs.client_context(), timeout=10)


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    directory = tmp_path_factory.mktemp("tls")
    certs = Certs(trustme.CA(), directory)
    listener_cert, listener_key = certs.issue("listener", common_name="listener-one")
    upstream_cert, upstream_key = certs.issue("upstream", common_name="upstream")
    certs.ca.cert_pem.write_to_path(directory / "ca.pem")
    trustme.CA().cert_pem.write_to_path(directory / "other-ca.pem")
    secure = ThreadedServer(APP, ssl_certfile=str(upstream_cert), ssl_keyfile=str(upstream_key)).start()
    plain = ThreadedServer(APP).start()
    config = directory / "routes.yaml"
    config.write_text(f"""
version: 1
listen: {{tls: {{cert: listener.pem, key: listener.key}}}}
upstreams:
  secure: {{url: "https://127.0.0.1:{secure.port}", tls: {{ca_file: ca.pem, server_name: localhost}}}}
  wrong-ca: {{url: "https://127.0.0.1:{secure.port}", tls: {{ca_file: other-ca.pem, server_name: localhost}}}}
  plain: {{url: "{plain.url}"}}
routes:
  - {{name: secure, match: {{path: /secure}}, to: secure}}
  - name: wrong-ca
    match: {{path: /wrong-ca}}
    to: wrong-ca
    circuit_breaker: {{failure_threshold: 2, recovery_timeout: 1h}}
  - {{name: ws, match: {{path: /ws}}, to: secure}}
  - {{name: plain, match: {{path: /}}, to: plain}}
""")
    proxy = ProxyProcess(config).start()
    try:
        yield Edge(certs, proxy, listener_cert, listener_key)
    finally:
        proxy.terminate()
        secure.stop()
        plain.stop()


def test_the_public_listener_serves_https_and_tells_the_upstream_so(edge: Edge):
    answer = edge.get("/plain/hello")
    assert answer.status_code == 200 and answer.headers["x-strangler-upstream"] == "plain"
    assert answer.json()["x-forwarded-proto"] == "https"


def test_an_https_upstream_is_checked_against_its_own_ca_and_server_name(edge: Edge):
    for _ in range(3):                  # pooled: the TLS connection is used again
        answer = edge.get("/secure/orders")
        assert answer.status_code == 200 and answer.headers["x-strangler-upstream"] == "secure"
    assert scrape(edge.proxy.admin_url).value("strangler_upstream_attempts_total", upstream="secure",
                                              outcome="ok") == 3


def test_a_certificate_from_another_ca_is_a_502_tls_error_that_opens_the_breaker(edge: Edge):
    for _ in range(2):
        answer = edge.get("/wrong-ca/orders")
        assert answer.status_code == 502
        assert answer.json()["reason"] == "tls_error"
    assert breaker_state(edge.proxy.admin_url, "wrong-ca", "wrong-ca") == "open"
    assert edge.get("/wrong-ca/orders").json()["reason"] == "circuit_open"
    found = scrape(edge.proxy.admin_url)
    assert found.value("strangler_upstream_attempts_total", route="wrong-ca", outcome="tls_error") == 2
    assert found.value("strangler_proxy_errors_total", route="wrong-ca", reason="tls_error") == 2


def test_a_websocket_passes_over_tls_on_both_sides(edge: Edge):
    with connect(f"wss://127.0.0.1:{edge.proxy.port}/ws/echo", ssl=edge.certs.client_context(),
                 server_hostname="localhost", proxy=None, open_timeout=5) as ws:
        for message in ("over tls", "x" * 100_000):
            ws.send(message)
            assert ws.recv(timeout=5) == message


def _served_certificate(port: int, context: ssl.SSLContext) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            return tls.getpeercert(binary_form=True) or b""


def test_a_certificate_swapped_on_disk_is_served_without_a_restart(edge: Edge):
    context = edge.certs.client_context()
    before = _served_certificate(edge.proxy.port, context)
    renewed_cert, renewed_key = edge.certs.issue("renewed", common_name="listener-two")
    # As certificate managers renew: the new files are renamed over the old ones.
    os.replace(renewed_key, edge.listener_key)
    os.replace(renewed_cert, edge.listener_cert)
    expected = ssl.PEM_cert_to_DER_cert(edge.listener_cert.read_text())
    assert expected != before
    wait_until(lambda: _served_certificate(edge.proxy.port, context) == expected, timeout_s=10,
               what="the renewed certificate to be served")
    assert edge.get("/plain/after-renewal").status_code == 200
    assert edge.proxy.process is not None and edge.proxy.process.poll() is None


class TlsAdminProxy(ProxyProcess):
    """A proxy whose admin listener serves HTTPS (admin.tls), checked with the test's CA."""

    def __init__(self, config_path: Path, context: ssl.SSLContext) -> None:
        super().__init__(config_path)
        self.admin_url = self.admin_url.replace("http://", "https://")
        self.context = context

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"proxy exited with {self.process.returncode}:\n{self.log()}")
        try:
            return httpx.get(self.admin_url + "/health/ready", verify=self.context, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False


def test_the_admin_listener_can_have_its_own_tls(edge: Edge, tmp_path: Path):
    cert, key = edge.certs.issue("admin", common_name="admin")
    config = tmp_path / "admin.yaml"
    config.write_text(f"""
version: 1
admin: {{tls: {{cert: "{cert}", key: "{key}"}}}}
upstreams: {{plain: {{url: "http://127.0.0.1:9"}}}}
routes: [{{name: plain, match: {{path: /}}, to: plain}}]
""")
    proxy = TlsAdminProxy(config, edge.certs.client_context()).start()
    try:
        assert httpx.get(proxy.admin_url + "/health/live", verify=edge.certs.client_context()).status_code == 200
        with pytest.raises(httpx.HTTPError):
            httpx.get(proxy.admin_url.replace("https://", "http://") + "/health/live", timeout=2)
    finally:
        assert proxy.terminate() == 0

"""Encoded slashes through the proxy, byte for byte on the wire: `reject` (the default) answers 400,
`keep` forwards the path as the client wrote it, and `..%2F` leaves no route's prefix in either mode."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.hardening.wire import fetch
from tests.support.faults import RecordingUpstream
from tests.support.servers import ProxyProcess


@dataclass
class Edge:
    proxy: ProxyProcess
    upstream: RecordingUpstream

    def reached(self, test_id: str) -> list[str]:
        return [seen.target for seen in self.upstream.requests() if seen.test_id == test_id]


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    upstream = RecordingUpstream().start()
    path = tmp_path_factory.mktemp("slashes") / "routes.yaml"
    path.write_text(f"""
version: 1
upstreams: {{app: {{url: "{upstream.url}"}}}}
routes:
  - name: projects
    match: {{path: /api/projects}}
    to: app
    paths: {{encoded_slash: keep}}
  - name: stripped
    match: {{path: /files}}
    to: app
    strip_prefix: true
    paths: {{encoded_slash: keep}}
  - name: rest
    match: {{path: /}}
    to: app
""")
    proxy = ProxyProcess(path).start()
    try:
        yield Edge(proxy, upstream)
    finally:
        proxy.terminate()
        upstream.stop()


@pytest.mark.parametrize(("target", "received"), [
    ("/api/projects/group%2Fname", "/api/projects/group%2Fname"),
    ("/api/projects/group%2fname/issues?state=open", "/api/projects/group%2fname/issues?state=open"),
    ("/api/projects/%7Euser%2Frepo%3D", "/api/projects/%7Euser%2Frepo%3D"),
    ("/files/bucket%2Fkey.txt", "/bucket%2Fkey.txt"),
])
def test_keep_forwards_the_path_byte_for_byte(edge: Edge, test_id: str, target: str, received: str):
    answer = fetch(edge.proxy.port, "GET", target, test_id=test_id)
    assert answer.status == 200 and answer.header("x-strangler-route") in ("projects", "stripped")
    assert edge.reached(test_id) == [received]


def test_reject_stays_the_default_and_answers_400(edge: Edge, test_id: str):
    answer = fetch(edge.proxy.port, "GET", "/api/other/group%2Fname", test_id=test_id)
    assert answer.status == 400 and json.loads(answer.body)["reason"] == "bad_path"
    assert edge.reached(test_id) == []


@pytest.mark.parametrize("target", [
    "/api/projects/..%2F..%2Fadmin", "/api/projects/%2e%2e%2Fadmin", "/api/projects/x%2F..%2F..%2Fadmin",
    "/api/other/..%2F..%2Fadmin", "/files/..%2Fsecret",
])
def test_dot_dot_behind_an_encoded_slash_never_leaves_the_prefix(edge: Edge, test_id: str, target: str):
    answer = fetch(edge.proxy.port, "GET", target, test_id=test_id)
    assert answer.status == 400
    assert edge.reached(test_id) == []


@pytest.fixture
def test_id() -> str:
    import uuid
    return uuid.uuid4().hex[:12]

"""Module-scoped rigs for the hardening tests: recording upstreams, toxiproxies and `strangler run`.

A proxy process takes about a second to start, so each test module starts the
ones it needs once and its tests share them; every test marks its requests
with a unique id (`X-Test-Id` and a path segment) and looks only at those.
Teardown order matters: toxiproxies and upstreams stop first (held answers
end, connections drop), then the proxies get SIGTERM and drain at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.faults import RecordingUpstream
from tests.support.servers import ProxyProcess
from tests.support.toxiproxy import Toxiproxy


class Rig:
    """What one test module started; `close()` stops all of it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._upstreams: list[RecordingUpstream] = []
        self._toxiproxies: list[Toxiproxy] = []
        self._proxies: list[ProxyProcess] = []

    def upstream(self) -> RecordingUpstream:
        upstream = RecordingUpstream().start()
        self._upstreams.append(upstream)
        return upstream

    def toxiproxy(self, upstream: RecordingUpstream, name: str = "toxiproxy") -> Toxiproxy:
        proxy = Toxiproxy(upstream.port, name=name, seed=7).start()
        self._toxiproxies.append(proxy)
        return proxy

    def proxy(self, config_text: str, *extra_args: str, name: str = "routes") -> ProxyProcess:
        path = self.directory / f"{name}-{len(self._proxies)}.yaml"
        path.write_text(config_text)
        proxy = ProxyProcess(path, *extra_args).start()
        self._proxies.append(proxy)
        return proxy

    def close(self) -> None:
        for toxiproxy in reversed(self._toxiproxies):
            toxiproxy.stop()
        for upstream in reversed(self._upstreams):
            upstream.stop()
        for proxy in reversed(self._proxies):
            proxy.terminate()


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    rig = Rig(tmp_path_factory.mktemp("hardening"))
    try:
        yield rig
    finally:
        rig.close()


@pytest.fixture
def test_id() -> str:
    """A marker unique to this test's requests."""
    return uuid.uuid4().hex[:12]

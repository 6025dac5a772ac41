from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.servers import ProxyProcess, ThreadedServer


@pytest.fixture
def start_upstream() -> Iterator[Callable[..., ThreadedServer]]:
    """Start an ASGI app as a real upstream on 127.0.0.1; stopped at the end of the test."""
    started: list[ThreadedServer] = []

    def start(app: object, **config: object) -> ThreadedServer:
        server = ThreadedServer(app, **config).start()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()


@pytest.fixture
def start_proxy(tmp_path: Path) -> Iterator[Callable[..., ProxyProcess]]:
    """Write a YAML config and run `strangler run` on it; terminated at the end of the test."""
    started: list[ProxyProcess] = []

    def start(config_text: str, *extra_args: str, name: str = "routes.yaml", **kwargs: object) -> ProxyProcess:
        path = tmp_path / name
        path.write_text(config_text)
        proxy = ProxyProcess(path, *extra_args, **kwargs).start()   # type: ignore[arg-type]
        started.append(proxy)
        return proxy

    yield start
    for proxy in reversed(started):
        proxy.terminate()

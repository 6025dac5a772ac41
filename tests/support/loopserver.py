"""A server on 127.0.0.1 run in a thread with an event loop of its own.

The base of the test upstreams (tests/support/faults.py) and of the toxiproxy
(tests/support/toxiproxy.py): `start()` returns once the server listens (or
says why it could not), `stop()` drops every connection it tracks, cancels
their handlers, stops the loop and joins the thread.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager


class LoopServer:
    """Subclasses listen in `_listen` (setting `_server`) and track their connections with `_tracked`."""

    def __init__(self, name: str) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)
        self._started = threading.Event()
        self._failure: BaseException | None = None

    def start(self):  # type: ignore[no-untyped-def]
        self._thread.start()
        if not self._started.wait(timeout=10):
            raise AssertionError(f"{self._thread.name} did not start")
        if self._failure is not None:
            raise AssertionError(f"{self._thread.name} did not start: {self._failure!r}")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self):  # type: ignore[no-untyped-def]
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            try:
                loop.run_until_complete(self._listen())
            except BaseException as error:       # port taken meanwhile: say so in start()
                self._failure = error
                return
            finally:
                self._started.set()
            loop.run_forever()
        finally:
            loop.close()

    async def _listen(self) -> None:
        raise NotImplementedError

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _call(self, coroutine_function: Callable[[], Awaitable[None]]) -> None:
        """Run `coroutine_function()` on the server's loop and wait for it."""
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(coroutine_function(), self._loop).result(timeout=10)  # type: ignore[arg-type]

    @contextmanager
    def _tracked(self, writer: asyncio.StreamWriter | None = None) -> Iterator[None]:
        """Within a connection handler: `stop()` cancels it (and aborts `writer`)."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        if writer is not None:
            self._writers.add(writer)
        try:
            yield
        finally:
            self._tasks.discard(task)
            if writer is not None:
                self._writers.discard(writer)


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: the peer gets a RST, not a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()

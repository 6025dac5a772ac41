"""The proxy as a raw ASGI application (no framework objects on the data path)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from typing import Any

from .config.loader import ConfigError
from .errors import ClientDisconnected, ProxyError, Reason
from .exchange import Exchange, request_id_of
from .health import check_upstreams_forever
from .pipeline import ResponseAborted, handle
from .problem import problem_body, problem_headers
from .reload import ConfigHolder

log = logging.getLogger("strangler.proxy")


RELOAD_SIGNALS = (signal.SIGHUP, signal.SIGUSR1)


def _expects_continue(scope: dict[str, Any]) -> bool:
    """A client that sent `Expect: 100-continue` may or may not send its body after a refusal
    made without reading it: the connection's next bytes are ambiguous, so it is not reused."""
    return any(name == b"expect" and value.lower() == b"100-continue" for name, value in scope["headers"])


class ProxyApp:
    def __init__(self, holder: ConfigHolder, *, watch: bool = True, health_checks: bool = True) -> None:
        self.holder = holder
        self.metrics = holder.metrics
        self.active_requests = 0
        self._watch = watch
        self._health_checks = health_checks
        self._background: list[asyncio.Task[None]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            # Upgrades are not forwarded: refuse the handshake rather than half-support it.
            await receive()
            await send({"type": "websocket.close", "code": 1008})

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        runtime = self.holder.runtime     # read once: the request finishes on the config it started with
        exchange = Exchange(self.metrics, request_id_of(scope["headers"]), scope["method"])
        if runtime is None:
            await self._refuse(send, exchange, ProxyError("no valid config loaded", reason=Reason.OVERLOADED), True)
            exchange.record(None)
            return
        config = runtime.config
        self.active_requests += 1
        try:
            if self.active_requests > config.limits.max_concurrent_requests:
                raise ProxyError("too many requests in flight", reason=Reason.OVERLOADED, retry_after_s=1)
            await handle(runtime, scope, receive, send, exchange)
        except ProxyError as error:
            exchange.error = error
            if error.route is None:
                error.route = exchange.route or None
            if error.upstream is None:
                error.upstream = exchange.upstream or None
            if exchange.status is not None:
                raise ResponseAborted(error.detail) from error
            exchange.release_upstream()
            await self._refuse(send, exchange, error, config.expose_headers, close=_expects_continue(scope))
        except ClientDisconnected as gone:
            exchange.error = gone
        except ResponseAborted as aborted:
            log.warning("response.aborted rid=%s route=%s upstream=%s detail=%s",
                        exchange.request_id, exchange.route, exchange.upstream, aborted)
            raise
        finally:
            self.active_requests -= 1
            exchange.record(config.access_log.format if config.access_log.enabled else None)

    @staticmethod
    async def _refuse(send: Any, exchange: Exchange, error: ProxyError, expose: bool, *, close: bool = False) -> None:
        body = problem_body(error)
        headers = problem_headers(error, body, expose=expose)
        if close and not any(name == b"connection" for name, _ in headers):
            headers.append((b"connection", b"close"))
        headers.append((b"x-request-id", exchange.request_id.encode()))
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
        exchange.status = error.status

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._start_background()
                _settle_heap()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._stop_background()
                await self.holder.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _start_background(self) -> None:
        """Reload on file change and on SIGHUP/SIGUSR1; probe upstream health."""
        loop = asyncio.get_running_loop()
        if self._watch:
            self._background.append(loop.create_task(self.holder.watch()))
        if self._health_checks:
            self._background.append(loop.create_task(check_upstreams_forever(self.holder)))
        for sig in RELOAD_SIGNALS:
            with contextlib.suppress(RuntimeError, ValueError, NotImplementedError):
                loop.add_signal_handler(sig, self._reload_quietly)

    def _reload_quietly(self) -> None:
        with contextlib.suppress(ConfigError):
            self.holder.reload()

    async def _stop_background(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in RELOAD_SIGNALS:
            with contextlib.suppress(RuntimeError, ValueError, NotImplementedError):
                loop.remove_signal_handler(sig)
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background.clear()


def _settle_heap() -> None:
    """Keep the garbage collector off the request path once everything is loaded.

    Modules, config and metrics live as long as the process; frozen, full collections no
    longer walk them (they paused the loop ~10 ms at a time under load, doubling S1's p99).
    The request path makes no reference cycles, so young collections triggered by a burst of
    in-flight requests found nothing to free: a higher first threshold makes them rarer.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)

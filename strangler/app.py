"""The proxy as a raw ASGI application (no framework objects on the data path)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from typing import Any

from .config.loader import ConfigError
from .config.model import Limits
from .errors import ProxyError, Reason, ResponseAborted
from .health import check_upstreams_forever
from .outcome import RequestTrace, request_id_of
from .pipeline import handle, refuse
from .recorder import Recorder
from .reload import ConfigHolder
from .runtime import Runtime

log = logging.getLogger("strangler.proxy")


RELOAD_SIGNALS = (signal.SIGHUP, signal.SIGUSR1)


class ProxyApp:
    def __init__(self, holder: ConfigHolder, *, watch: bool = True, health_checks: bool = True) -> None:
        self.holder = holder
        self.metrics = holder.metrics
        self.recorder = Recorder(holder.metrics, lambda: _access_log_format(holder.runtime))
        self.listener = _Listener(holder, self.recorder)
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
        # No "websocket" scopes: the listener runs uvicorn with ws="none" and tunnels WebSockets
        # itself (protocol.py, websocket.py).

    async def _http(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        runtime = self.holder.runtime     # read once: the request finishes on the config it started with
        trace = RequestTrace(request_id_of(scope["headers"]), scope["method"])
        self.active_requests += 1
        try:
            if runtime is None:
                await refuse(send, trace, ProxyError("no valid config loaded", reason=Reason.OVERLOADED), True)
            elif self.active_requests > runtime.config.limits.max_concurrent_requests:
                error = ProxyError("too many requests in flight", reason=Reason.OVERLOADED, retry_after_s=1)
                await refuse(send, trace, error, runtime.config.expose_headers)
            else:
                await handle(runtime, scope, receive, send, trace, self.recorder)
        except ResponseAborted as aborted:
            log.warning("response.aborted rid=%s route=%s upstream=%s detail=%s",
                        trace.request_id, trace.route, trace.upstream, aborted)
            raise
        finally:
            self.active_requests -= 1
            self.recorder.finish(trace.freeze(), _access_log_format(runtime))

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


def _access_log_format(runtime: Runtime | None) -> str | None:
    if runtime is None or not runtime.config.access_log.enabled:
        return None
    return runtime.config.access_log.format


class _Listener:
    """The listener's view of this app (protocol.ListenerPolicy): the current limits, and its refusals."""

    __slots__ = ("_holder", "_recorder")

    def __init__(self, holder: ConfigHolder, recorder: Recorder) -> None:
        self._holder = holder
        self._recorder = recorder

    @property
    def limits(self) -> Limits:
        runtime = self._holder.runtime
        return runtime.config.limits if runtime is not None else _DEFAULT_LIMITS

    def refused(self, error: ProxyError, client: str | None) -> None:
        self._recorder.listener_refusal(error, client)


_DEFAULT_LIMITS = Limits()

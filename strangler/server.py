"""Serving: the proxy and the admin listener in one process, with reload and graceful stop.

The only module besides the command line that touches uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn

from .admin import create_admin_app
from .app import ProxyApp
from .config.model import ListenerTls
from .control.plane import local_controller
from .protocol import LimitedHttpToolsProtocol
from .reload import ConfigHolder
from .tls import ListenerCertificate

log = logging.getLogger("strangler.server")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeOptions:
    config_path: str
    host: str
    port: int
    admin_host: str
    admin_port: int
    log_level: str = "info"
    graceful_timeout_s: float = 30.0
    watch: bool = True
    tls: ListenerTls | None = None          # the public listener's certificate (listen.tls)
    admin_tls: ListenerTls | None = None    # the admin listener's (admin.tls)

    def url(self, admin: bool = False) -> str:
        host, port, tls = (self.admin_host, self.admin_port, self.admin_tls) if admin else (self.host, self.port, self.tls)
        return f"{'https' if tls else 'http'}://{host}:{port}"


class _AdminServer(uvicorn.Server):
    # The proxy server owns SIGINT/SIGTERM; the admin listener stops after it.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def tls_settings(tls: ListenerTls | None) -> dict[str, object]:
    """uvicorn settings for a listener's TLS: a context whose certificate follows its files (tls.py)."""
    return {} if tls is None else {"ssl_context_factory": ListenerCertificate(tls)}


def proxy_uvicorn_config(app: object, host: str, port: int, log_level: str, graceful_timeout_s: float,
                         tls: ListenerTls | None = None, **extra: object) -> uvicorn.Config:
    return uvicorn.Config(
        app, host=host, port=port, log_level=log_level,
        http=LimitedHttpToolsProtocol, loop="uvloop", lifespan="on",
        # WebSockets are tunnelled byte for byte by protocol.py; uvicorn's own would re-encode frames.
        ws="none",
        # The upstream's Date and Server go out as they are; uvicorn's would duplicate them.
        server_header=False, date_header=False,
        # X-Forwarded-* are the proxy's business (trusted_proxies), never uvicorn's.
        proxy_headers=False, forwarded_allow_ips="",
        access_log=False, timeout_graceful_shutdown=graceful_timeout_s, backlog=2048,
        timeout_keep_alive=15,
        **tls_settings(tls),
        **extra,
    )


def admin_uvicorn_config(app: object, options: ServeOptions) -> uvicorn.Config:
    return uvicorn.Config(app, host=options.admin_host, port=options.admin_port, log_level=options.log_level,
                          lifespan="off", access_log=False, server_header=False, ws="none",
                          **tls_settings(options.admin_tls))


async def serve(options: ServeOptions, holder: ConfigHolder) -> None:
    app = ProxyApp(holder, watch=options.watch)
    proxy = uvicorn.Server(proxy_uvicorn_config(app, options.host, options.port, options.log_level,
                                                options.graceful_timeout_s, options.tls))
    # The controller puts its state's shares (a ramp's step, roll back all) in force before the first request.
    controller = local_controller(holder)
    controller.start()
    admin_app = create_admin_app(holder, controller=controller, bound_host=options.admin_host)
    admin = _AdminServer(admin_uvicorn_config(admin_app, options))
    admin_task = asyncio.create_task(admin.serve())
    control_task = asyncio.create_task(controller.run())
    runtime = holder.runtime
    log.info("strangler.started listen=%s admin=%s config=%s version=%s",
             options.url(), options.url(admin=True), options.config_path, runtime.config.sha256 if runtime else None)
    try:
        await proxy.serve()
    finally:
        control_task.cancel()
        admin.should_exit = True
        await asyncio.gather(admin_task, control_task, return_exceptions=True)
        log.info("strangler.stopped")


def run_forever(options: ServeOptions, holder: ConfigHolder) -> None:
    try:
        import uvloop
        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        factory = None
    signal.signal(signal.SIGTERM, _stop_requested)
    signal.signal(signal.SIGINT, _stop_requested)
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(options, holder))


def _stop_requested(signum: int, frame: object) -> None:
    # uvicorn re-raises the stop signal once it has drained; landing here makes
    # that a clean exit 0 instead of death by the default handler.
    log.info("strangler.signal signal=%s", signal.Signals(signum).name)

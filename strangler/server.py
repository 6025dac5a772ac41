"""Serving: the proxy and the admin listener in one process, with reload and graceful stop.

The ramps run here (an in-process controller), or at a controller of their own
(`--control URL`), whose shares this instance follows. On SIGTERM the instance
first answers 503 on /health/ready for `shutdown_delay_s` while it still serves,
so that a balancer stops sending; then it stops accepting, lets the requests in
flight finish and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn

from .admin import Readiness, create_admin_app, dashboard_sources
from .admin_guard import AdminGuard, admin_token
from .app import ProxyApp
from .config.model import ListenerTls
from .control.api import controller_elsewhere_routes
from .control.follower import ControlFollower
from .control.plane import local_controller
from .dashboard import Dashboard
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
    control_url: str | None = None      # follow this controller's shares instead of running the ramps here
    shutdown_delay_s: float = 0.0       # after SIGTERM: /health/ready says 503 this long, still serving
    state_dir: str | None = None        # in place of the config's state_dir
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


class DrainingServer(uvicorn.Server):
    """uvicorn's server that, on SIGTERM or SIGINT, says unready for `delay_s` while it serves, then stops.

    A second signal stops it at once (stop accepting, drain).
    """

    def __init__(self, config: uvicorn.Config, readiness: Readiness, delay_s: float) -> None:
        super().__init__(config)
        self.readiness = readiness
        self.delay_s = delay_s
        self._stop_at: float | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.signalled) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def signalled(self, signum: int, frame: object = None) -> None:
        log.info("strangler.signal signal=%s", signal.Signals(signum).name)
        if self.readiness.draining_since is None:
            self.readiness.draining_since = time.time()
            if self.delay_s > 0:
                self._stop_at = time.monotonic() + self.delay_s
                log.info("strangler.draining ready=503 for=%gs while serving, then stop accepting", self.delay_s)
                return
        if self.should_exit and signum == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self._stop_at is not None and time.monotonic() >= self._stop_at:
            self.should_exit = True
        return await super().on_tick(counter)


def control_plane(options: ServeOptions, holder: ConfigHolder, readiness: Readiness, *, workers: bool = False,
                  on_reload: Callable[[], None] | None = None) -> tuple[AdminGuard, Coroutine[Any, Any, None]]:
    """The admin app and the control plane's loop: the ramps' controller here, or a follower of the controller,
    beside the dashboard's history.

    Either puts its shares in force (a ramp's step, roll back all) before the first request.
    """
    if options.control_url:
        follower = ControlFollower(options.control_url, holder, holder.apply_overlay,
                                   lambda: admin_token(holder.runtime.config if holder.runtime else None),
                                   holder.metrics.follower())
        follower.start()
        readiness.control = follower.status
        dashboard = Dashboard(holder, dashboard_sources(holder, None, workers=workers))
        # With workers, the shares file the follower keeps is what the workers follow.
        app = create_admin_app(holder, on_reload=on_reload, workers=workers, bound_host=options.admin_host,
                               readiness=readiness, extra_routes=controller_elsewhere_routes(follower.url),
                               dashboard=dashboard)
        return app, _together(follower.run(), dashboard.run())
    controller = local_controller(holder, workers=workers)
    controller.start()
    dashboard = Dashboard(holder, dashboard_sources(holder, controller, workers=workers))
    app = create_admin_app(holder, on_reload=on_reload, workers=workers, controller=controller,
                           bound_host=options.admin_host, readiness=readiness, dashboard=dashboard)
    return app, _together(controller.run(), dashboard.run())


async def _together(*loops: Coroutine[Any, Any, None]) -> None:
    # Cancelling this cancels each of them.
    await asyncio.gather(*loops)


async def serve(options: ServeOptions, holder: ConfigHolder) -> None:
    app = ProxyApp(holder, watch=options.watch)
    readiness = Readiness()
    proxy = DrainingServer(proxy_uvicorn_config(app, options.host, options.port, options.log_level,
                                                options.graceful_timeout_s, options.tls),
                           readiness, options.shutdown_delay_s)
    admin_app, control_loop = control_plane(options, holder, readiness)
    admin = _AdminServer(admin_uvicorn_config(admin_app, options))
    admin_task = asyncio.create_task(admin.serve())
    control_task = asyncio.create_task(control_loop)
    runtime = holder.runtime
    log.info("strangler.started listen=%s admin=%s config=%s version=%s control=%s",
             options.url(), options.url(admin=True), options.config_path,
             runtime.config.sha256 if runtime else None, options.control_url or "in-process")
    try:
        await proxy.serve()
    finally:
        control_task.cancel()
        admin.should_exit = True
        await asyncio.gather(admin_task, control_task, return_exceptions=True)
        log.info("strangler.stopped")


def run_forever(options: ServeOptions, holder: ConfigHolder) -> None:
    run_until_stopped(serve(options, holder))


def run_until_stopped(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` on uvloop until it returns (the servers in it stop on SIGTERM or SIGINT)."""
    try:
        import uvloop
        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        factory = None
    signal.signal(signal.SIGTERM, _stop_requested)
    signal.signal(signal.SIGINT, _stop_requested)
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)


def _stop_requested(signum: int, frame: object) -> None:
    # A stop signal outside DrainingServer's watch (before serving starts, or while the admin listener
    # stops) lands here: a clean exit 0 instead of death by the default handler.
    log.info("strangler.signal signal=%s", signal.Signals(signum).name)

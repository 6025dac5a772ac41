"""`strangler run --workers N`: N proxy processes on one listening socket, one admin listener.

The parent binds the public socket, supervises the workers (uvicorn's
supervisor), and serves the admin API from a thread. Workers write metrics
to a shared directory (prometheus-client's multiprocess mode), so /metrics
adds up all of them. Every worker watches the config file; a reload asked
of the parent (SIGHUP, POST /reload) is passed on to each worker as SIGUSR1.
The one controller (ramps, roll back all) runs in the parent, on the admin
thread, reading every worker's metrics; it writes the shares it decides to
the state directory's shares.json, which every worker applies within its
watch interval, also when the config file on disk is invalid.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import threading

import uvicorn
from uvicorn.supervisors.multiprocess import Multiprocess

from .admin import create_admin_app
from .config.loader import ConfigError
from .control.controller import Controller
from .control.plane import local_controller
from .health import check_upstreams_forever
from .logs import configure_logging
from .metrics import Metrics
from .reload import ConfigHolder
from .server import ServeOptions, admin_uvicorn_config, proxy_uvicorn_config

log = logging.getLogger("strangler.workers")
CONFIG_ENV = "STRANGLER_CONFIG"


def worker_app():
    """The app factory each worker process calls (uvicorn `factory=True`)."""
    from .app import ProxyApp

    configure_logging()
    holder = ConfigHolder(os.environ[CONFIG_ENV], Metrics(), count_reloads=False, follow_shares=True)
    holder.reload()
    # The parent probes upstream health once for all workers.
    return ProxyApp(holder, health_checks=False)


class _Supervisor(Multiprocess):
    def __init__(self, config: uvicorn.Config, sockets: list, holder: ConfigHolder) -> None:
        super().__init__(config, sockets)
        self.holder = holder

    def handle_hup(self) -> None:
        # SIGHUP means "reload the config", as in single-process mode, not "restart the workers".
        try:
            self.holder.reload()
        except ConfigError:
            return
        self.signal_workers(signal.SIGUSR1)

    def signal_workers(self, sig: int) -> None:
        for process in self.processes:
            if process.pid is not None:
                try:
                    os.kill(process.pid, sig)
                except ProcessLookupError:
                    pass


def run_workers(options: ServeOptions, workers: int) -> int:
    """Serve with `workers` processes. PROMETHEUS_MULTIPROC_DIR is already set by the caller."""
    metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.environ[CONFIG_ENV] = options.config_path
    holder = ConfigHolder(options.config_path, Metrics())
    holder.reload()
    # Before any worker starts: its first runtime already has the shares in force.
    controller = local_controller(holder, workers=True)
    controller.start()
    config = proxy_uvicorn_config("strangler.workers:worker_app", options.host, options.port, options.log_level,
                                  options.graceful_timeout_s, options.tls, factory=True, workers=workers)
    socket = config.bind_socket()
    # uvicorn only binds; until a worker has started, connections would be refused while
    # /health/ready already says 200. Listening now queues them in the backlog instead.
    socket.listen(config.backlog)
    supervisor = _Supervisor(config, [socket], holder)
    admin = _AdminThread(options, holder, controller, on_reload=lambda: supervisor.signal_workers(signal.SIGUSR1))
    admin.start()
    log.info("strangler.started listen=%s admin=%s workers=%d config=%s",
             options.url(), options.url(admin=True), workers, options.config_path)
    try:
        supervisor.run()
    finally:
        admin.stop()
        socket.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


class _AdminThread:
    """The admin listener and upstream health checks, on their own event loop in the parent."""

    def __init__(self, options: ServeOptions, holder: ConfigHolder, controller: Controller, on_reload) -> None:
        app = create_admin_app(holder, on_reload=on_reload, workers=True, controller=controller,
                               bound_host=options.admin_host)
        self.holder = holder
        self.controller = controller
        self.server = uvicorn.Server(admin_uvicorn_config(app, options))
        self.thread = threading.Thread(target=self._run, name="strangler-admin", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            health = asyncio.create_task(check_upstreams_forever(self.holder))
            watch = asyncio.create_task(self.holder.watch())
            control = asyncio.create_task(self.controller.run())
            try:
                await self.server.serve()
            finally:
                health.cancel()
                watch.cancel()
                control.cancel()
        asyncio.run(main())

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

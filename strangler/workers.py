"""`strangler run --workers N`: N proxy processes on one listening socket, one admin listener.

The parent binds the public socket, supervises the workers (uvicorn's
supervisor), and serves the admin API from a thread. Workers write metrics
to a shared directory (prometheus-client's multiprocess mode), so /metrics
adds up all of them. Every worker watches the config file; a reload asked
of the parent (SIGHUP, POST /reload) is passed on to each worker as SIGUSR1.
The one controller (ramps, roll back all) runs in the parent, on the admin
thread, reading every worker's metrics; it writes the shares it decides to
the state directory's shares.json, which every worker applies within its
watch interval, also when the config file on disk is invalid. With
`--control URL` the parent follows that controller instead and keeps its
shares in the same file. On SIGTERM the parent says unready for the shutdown
delay while the workers serve, then stops them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Coroutine
from typing import Any

import uvicorn
from uvicorn.supervisors.multiprocess import Multiprocess

from .admin import Readiness
from .admin_guard import AdminGuard
from .config.loader import ConfigError
from .health import check_upstreams_forever
from .logs import configure_logging
from .metrics import Metrics
from .reload import ConfigHolder
from .server import ServeOptions, admin_uvicorn_config, control_plane, proxy_uvicorn_config

log = logging.getLogger("strangler.workers")
CONFIG_ENV = "STRANGLER_CONFIG"
STATE_DIR_ENV = "STRANGLER_STATE_DIR"


def worker_app():
    """The app factory each worker process calls (uvicorn `factory=True`)."""
    from .app import ProxyApp

    configure_logging()
    holder = ConfigHolder(os.environ[CONFIG_ENV], Metrics(), count_reloads=False, follow_shares=True,
                          state_dir=os.environ.get(STATE_DIR_ENV) or None)
    holder.reload()
    # The parent probes upstream health once for all workers.
    return ProxyApp(holder, health_checks=False)


class _Supervisor(Multiprocess):
    def __init__(self, config: uvicorn.Config, sockets: list, holder: ConfigHolder, readiness: Readiness,
                 shutdown_delay_s: float) -> None:
        super().__init__(config, sockets)
        self.holder = holder
        self.readiness = readiness
        self.shutdown_delay_s = shutdown_delay_s

    def handle_term(self) -> None:
        self._stop("SIGTERM")

    def handle_int(self) -> None:
        self._stop("SIGINT")

    def _stop(self, name: str) -> None:
        log.info("strangler.signal signal=%s", name)
        if self.readiness.draining_since is None and self.shutdown_delay_s > 0:
            # The workers serve on while /health/ready says 503; a second signal stops them at once.
            self.readiness.draining_since = time.time()
            log.info("strangler.draining ready=503 for=%gs while serving, then stop accepting", self.shutdown_delay_s)
            timer = threading.Timer(self.shutdown_delay_s, self.should_exit.set)
            timer.daemon = True
            timer.start()
            return
        self.readiness.draining_since = self.readiness.draining_since or time.time()
        self.should_exit.set()

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
    if options.state_dir:
        os.environ[STATE_DIR_ENV] = options.state_dir
    holder = ConfigHolder(options.config_path, Metrics(), state_dir=options.state_dir)
    holder.reload()
    config = proxy_uvicorn_config("strangler.workers:worker_app", options.host, options.port, options.log_level,
                                  options.graceful_timeout_s, options.tls, factory=True, workers=workers)
    socket = config.bind_socket()
    # uvicorn only binds; until a worker has started, connections would be refused while
    # /health/ready already says 200. Listening now queues them in the backlog instead.
    socket.listen(config.backlog)
    readiness = Readiness()
    supervisor = _Supervisor(config, [socket], holder, readiness, options.shutdown_delay_s)
    # Before any worker starts: its first runtime already has the shares in force.
    admin_app, control_loop = control_plane(options, holder, readiness, workers=True,
                                            on_reload=lambda: supervisor.signal_workers(signal.SIGUSR1))
    admin = _AdminThread(options, holder, admin_app, control_loop)
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

    def __init__(self, options: ServeOptions, holder: ConfigHolder, app: AdminGuard,
                 control_loop: Coroutine[Any, Any, None]) -> None:
        self.holder = holder
        self.control_loop = control_loop
        self.server = uvicorn.Server(admin_uvicorn_config(app, options))
        self.thread = threading.Thread(target=self._run, name="strangler-admin", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            health = asyncio.create_task(check_upstreams_forever(self.holder))
            watch = asyncio.create_task(self.holder.watch())
            control = asyncio.create_task(self.control_loop)
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

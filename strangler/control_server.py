"""`strangler control`: the control plane in a process of its own, for many proxy instances.

Ramps, roll back all and their state directory, on an admin listener with the
same API as an instance's (health, /routes, /metrics, /ramps, /rollback-all),
plus GET /control/shares, which every `strangler run --control URL` instance
long-polls for the shares it decides. With `--prometheus URL` the gates read
PromQL over every instance's metrics; without it, every step is inconclusive
(operators can still promote, roll back and roll back all).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import uvicorn

from .admin import create_admin_app
from .control.feed import SharesFeed, feed_routes
from .control.figures import GateFigures, NoFigures
from .control.plane import standalone_controller
from .control.prometheus import PrometheusFigures
from .reload import ConfigHolder
from .server import run_until_stopped

log = logging.getLogger("strangler.server")


@dataclass(frozen=True, slots=True, kw_only=True)
class ControlOptions:
    config_path: str
    admin_host: str
    admin_port: int
    prometheus_url: str | None = None
    scrape_interval_s: float = 15.0
    log_level: str = "info"
    graceful_timeout_s: float = 10.0


class _ControlServer(uvicorn.Server):
    # The instances' polls are held open; on the way out they are answered at once, so they do not
    # hold the shutdown (each instance then finds the controller gone and keeps its shares).
    def __init__(self, config: uvicorn.Config, feed: SharesFeed) -> None:
        super().__init__(config)
        self.feed = feed

    async def shutdown(self, sockets: list | None = None) -> None:
        self.feed.close()
        await super().shutdown(sockets=sockets)


def figures_for(options: ControlOptions) -> GateFigures:
    if options.prometheus_url:
        return PrometheusFigures(options.prometheus_url, scrape_interval_s=options.scrape_interval_s)
    return NoFigures("no source of figures: `strangler control` runs without --prometheus URL")


async def serve_control(options: ControlOptions, holder: ConfigHolder) -> None:
    figures = figures_for(options)
    feed = SharesFeed(lambda: holder.runtime.config.sha256 if holder.runtime else None)
    controller = standalone_controller(holder, figures, feed)
    controller.start()      # the state directory's shares are in the feed before the first poll
    app = create_admin_app(holder, controller=controller, bound_host=options.admin_host,
                           extra_routes=feed_routes(feed))
    server = _ControlServer(uvicorn.Config(app, host=options.admin_host, port=options.admin_port,
                                           log_level=options.log_level, lifespan="off", access_log=False,
                                           server_header=False, timeout_graceful_shutdown=options.graceful_timeout_s),
                            feed)
    tasks = [asyncio.create_task(controller.run()), asyncio.create_task(holder.watch())]
    runtime = holder.runtime
    log.info("strangler.control_started admin=http://%s:%d config=%s version=%s figures=%s state_dir=%s",
             options.admin_host, options.admin_port, options.config_path, runtime.config.sha256 if runtime else None,
             options.prometheus_url or "none", runtime.config.state_dir if runtime else None)
    try:
        await server.serve()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        close = getattr(figures, "close", None)
        if close is not None:
            await close()
        await holder.close()
        log.info("strangler.stopped")


def run_control(options: ControlOptions, holder: ConfigHolder) -> None:
    run_until_stopped(serve_control(options, holder))

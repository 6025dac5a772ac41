"""Active health checks of the upstreams that configure `health`."""

from __future__ import annotations

import asyncio
import logging
import time

from .reload import ConfigHolder

log = logging.getLogger("strangler.health")
TICK_S = 0.25


async def check_upstreams_forever(holder: ConfigHolder) -> None:
    """Probe each upstream on its own interval, against whatever config is current."""
    due: dict[str, float] = {}
    running: dict[str, asyncio.Task[None]] = {}
    while True:
        runtime = holder.runtime
        now = time.monotonic()
        if runtime is not None:
            for name, state in runtime.upstreams.items():
                check = state.upstream.health
                if check is None or name in running or due.get(name, 0.0) > now:
                    continue
                due[name] = now + check.interval_s
                task = asyncio.create_task(_probe(holder, name))
                running[name] = task
                task.add_done_callback(lambda _, name=name: running.pop(name, None))
        await asyncio.sleep(TICK_S)


async def _probe(holder: ConfigHolder, name: str) -> None:
    runtime = holder.runtime
    state = runtime.upstreams.get(name) if runtime else None
    if state is None or state.upstream.health is None:
        return
    check = state.upstream.health
    healthy, detail = await state.client.probe(check.path, check.timeout_s)
    was = state.health.healthy
    state.health.healthy = healthy
    state.health.checked_at = time.time()
    state.health.detail = detail
    holder.metrics.upstream_healthy.labels(name).set(1 if healthy else 0)
    if was is not healthy:
        level = logging.INFO if healthy else logging.WARNING
        log.log(level, "health.%s upstream=%s detail=%s", "up" if healthy else "down", name, detail)

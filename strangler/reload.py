"""The current config and its runtime: loaded, validated, swapped whole, watched for changes."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Callable

from .config.loader import ConfigError, load_config
from .forward import Connector, UpstreamClient
from .metrics import Metrics
from .runtime import Runtime, build_runtime

log = logging.getLogger("strangler.reload")

WATCH_INTERVAL_S = 0.4
RETIRED_CLIENT_GRACE_S = 120.0


class ConfigHolder:
    """Owns the reference every request reads once; a reload builds aside and swaps it."""

    def __init__(self, path: str, metrics: Metrics, *, count_reloads: bool = True,
                 connector: Connector | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.metrics = metrics
        # How the upstream clients open connections (by default TCP); tests pass a scripted fake.
        self.connector = connector
        self.clock = clock          # for the breakers and retry budgets it builds
        # With several workers the parent counts reloads once for all of them.
        self.count_reloads = count_reloads
        self.runtime: Runtime | None = None
        self.last_error: ConfigError | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._subscribers: list[Callable[[Runtime], None]] = []
        self._seen: str | None = None      # fingerprint of the file as last loaded or rejected

    def subscribe(self, callback: Callable[[Runtime], None]) -> None:
        """Call `callback` with every runtime swapped in (and the current one now)."""
        self._subscribers.append(callback)
        if self.runtime is not None:
            callback(self.runtime)

    def reload(self) -> Runtime:
        """Load the file and swap it in; on any problem keep the running config and raise ConfigError."""
        # Whatever asked for this reload (watcher, SIGHUP, POST /reload), the watcher need not repeat it.
        self._seen = self._fingerprint()
        try:
            config = load_config(self.path)
        except ConfigError as error:
            self.last_error = error
            if self.count_reloads:
                self.metrics.reloads.labels("failure").inc()
            kept = f" keeping={self.runtime.config.sha256[:12]}" if self.runtime else ""
            log.error("config.rejected file=%s problems=%d%s\n%s", self.path, len(error.problems), kept, error)
            raise
        for warning in config.warnings:
            log.warning("config.warning %s", warning)
        runtime, retired = build_runtime(config, self.metrics, self.runtime, connector=self.connector, clock=self.clock)
        previous, self.runtime = self.runtime, runtime
        self.last_error = None
        if self.count_reloads:
            self.metrics.reloads.labels("success").inc()
        log.info("config.loaded file=%s version=%s routes=%d%s", self.path, config.sha256[:12], len(config.routes),
                 f" previous={previous.config.sha256[:12]}" if previous else "")
        for client in retired:
            self._retire(client)
        for callback in self._subscribers:
            callback(runtime)
        return runtime

    def _retire(self, client: UpstreamClient) -> None:
        # Requests in flight may still stream through the old pool; close it once they are done.
        try:
            task = asyncio.get_running_loop().create_task(self._close_when_idle(client))
        except RuntimeError:
            return
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _close_when_idle(self, client: UpstreamClient) -> None:
        deadline = time.monotonic() + RETIRED_CLIENT_GRACE_S
        while client.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        await client.close()

    async def watch(self, interval_s: float = WATCH_INTERVAL_S) -> None:
        """Reload when the file's content changes and has held still for one interval.

        Polling the content (through symlinks) catches in-place writes, rename-over
        saves and Kubernetes ConfigMap `..data` swaps alike; waiting for the same
        content twice avoids loading a half-written file.
        """
        if self._seen is None:
            self._seen = self._fingerprint()
        pending: str | None = None
        while True:
            await asyncio.sleep(interval_s)
            current = self._fingerprint()
            if current == self._seen:
                pending = None
                continue
            if current != pending:
                pending = current
                continue
            pending = None
            try:
                self.reload()
            except ConfigError:
                pass

    def _fingerprint(self) -> str:
        try:
            with open(self.path, "rb") as file:
                return hashlib.sha256(file.read()).hexdigest()
        except OSError as error:
            return f"unreadable:{error.errno}"

    async def close(self) -> None:
        for task in list(self._retiring):
            task.cancel()
        if self.runtime is not None:
            for state in self.runtime.upstreams.values():
                await state.client.close()


def config_path_from_env(default: str = "config/routes.yaml") -> str:
    return os.environ.get("STRANGLER_CONFIG", default)

"""The current config and its runtime: loaded, validated, swapped whole, watched for changes."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable

from . import overlay as shares_file
from .config.loader import ConfigError, load_config
from .forward import Connector, UpstreamClient
from .metrics import Metrics
from .overlay import EMPTY, Overlay
from .runtime import Runtime, build_runtime

log = logging.getLogger("strangler.reload")

WATCH_INTERVAL_S = 0.4
RETIRED_CLIENT_GRACE_S = 120.0


class ConfigHolder:
    """Owns the reference every request reads once; a reload builds aside and swaps it."""

    def __init__(self, path: str, metrics: Metrics, *, count_reloads: bool = True,
                 connector: Connector | None = None, clock: Callable[[], float] = time.monotonic,
                 follow_shares: bool = False, state_dir: str | None = None) -> None:
        self.path = path
        # `--state-dir` in place of the file's state_dir (a ConfigMap's folder is read-only).
        self.state_dir = state_dir
        self.metrics = metrics
        # How the upstream clients open connections (by default TCP); tests pass a scripted fake.
        self.connector = connector
        self.clock = clock          # for the breakers and retry budgets it builds
        # With several workers the parent counts reloads once for all of them.
        self.count_reloads = count_reloads
        # A worker takes the shares its parent's controller decides from the state directory's shares file.
        self.follow_shares = follow_shares
        self.overlay: Overlay = EMPTY
        self._shares_seen: bytes | None = None
        # With --workers the parent swaps from two threads (SIGHUP on the main one, the controller and
        # the watcher on the admin one): a swap must not build on a runtime another swap is replacing.
        self._swapping = threading.RLock()
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
        with self._swapping:
            return self._reload()

    def _reload(self) -> Runtime:
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
        if self.state_dir:
            config = dataclasses.replace(config, state_dir=self.state_dir)
        for warning in config.warnings:
            log.warning("config.warning %s", warning)
        if self.follow_shares:
            self._read_shares(config.state_dir)
        runtime, retired = build_runtime(config, self.metrics, self.runtime, connector=self.connector,
                                         clock=self.clock, overlay=self.overlay)
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

    def apply_overlay(self, overlay: Overlay) -> None:
        """Swap in a runtime of the running config with these shares in force (no file is read)."""
        with self._swapping:
            self.overlay = overlay
            if self.runtime is None:
                return
            runtime, retired = build_runtime(self.runtime.config, self.metrics, self.runtime, connector=self.connector,
                                             clock=self.clock, overlay=overlay)
            self.runtime = runtime
        for client in retired:
            self._retire(client)
        for callback in self._subscribers:
            callback(runtime)

    def _read_shares(self, state_dir: str) -> bool:
        """Take the shares file's overlay when it changed; True when it did. A bad file keeps the last one."""
        path = os.path.join(state_dir, shares_file.SHARES_FILE)
        try:
            with open(path, "rb") as file:
                data = file.read()
        except FileNotFoundError:
            data = b""
        except OSError as error:
            log.error("shares.unreadable file=%s error=%s keeping=last", path, error)
            return False
        if data == self._shares_seen:
            return False
        self._shares_seen = data
        try:
            self.overlay = shares_file.decode(data) if data else EMPTY
        except ValueError as error:
            log.error("shares.refused file=%s reason=%s keeping=last", path, error)
            return False
        log.info("shares.applied file=%s rollback_all=%s ramps=%d", path, self.overlay.rollback_all_to or "-",
                 len(self.overlay.ramps))
        return True

    def follow_shares_now(self) -> None:
        """A worker's check of the shares file: apply it at once when it changed."""
        if self.runtime is not None and self._read_shares(self.runtime.config.state_dir):
            self.apply_overlay(self.overlay)

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
            if self.follow_shares:
                self.follow_shares_now()
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

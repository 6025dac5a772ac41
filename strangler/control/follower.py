"""A proxy instance that takes its shares from a controller: `strangler run --control URL`.

It long-polls the controller's GET /control/shares (feed.py) with the admin
token and puts each new overlay in force through `publish`, the runtime's swap
that a reload also goes through, then keeps it in the state directory's
shares.json (write, fsync, rename). Before serving it puts the kept overlay in
force, so a restart while the controller is away serves the last decision, not
the file's starting split. Losing the controller changes nothing but
`strangler_control_connected`: the shares in force stay, and readiness never
depends on it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import overlay as shares
from ..metrics import FollowerMetrics
from ..overlay import Overlay
from ..reload import ConfigHolder
from .fetch import FetchError, JsonClient
from .feed import PATH
from .store import atomic_write

log = logging.getLogger("strangler.control")

HOLD_S = 10.0           # how long the controller may hold one poll
RETRY_S = 0.5           # between polls while the controller is away
MIN_POLL_S = 1.0        # a poll answered at once with nothing new waits this long before the next one
TICK_S = 0.5            # how often the age of the shares in force is brought up to date


class ControlFollower:
    def __init__(self, url: str, holder: ConfigHolder, publish: Callable[[Overlay], None],
                 token: Callable[[], str | None], metrics: FollowerMetrics, *,
                 clock: Callable[[], float] = time.time) -> None:
        assert holder.runtime is not None, "load the config first"
        self.url = url.rstrip("/")
        self.holder = holder
        self.publish = publish
        self.token = token
        self.metrics = metrics
        self.clock = clock
        self.path = Path(holder.runtime.config.state_dir) / shares.SHARES_FILE
        self.revision: str | None = None      # of the overlay in force, when it came from a controller
        self.connected = False
        self.heard_at = clock()               # when the controller last confirmed the shares in force
        self.last_error: str | None = None
        self._config_mismatch: tuple[str | None, str | None] | None = None

    def start(self) -> None:
        """Put the overlay kept by the last run in force; call before serving."""
        try:
            data = self.path.read_bytes()
            kept = shares.decode(data)
        except FileNotFoundError:
            log.info("control.nothing_kept file=%s: the config's shares until the controller answers", self.path)
            return
        except (OSError, ValueError) as error:
            log.error("control.kept_refused file=%s reason=%s: the config's shares until the controller answers",
                      self.path, error)
            return
        self.publish(kept)
        self.revision = shares.revision(kept)
        self.heard_at = os.stat(self.path).st_mtime
        log.info("control.restored file=%s revision=%s rollback_all=%s ramps=%d", self.path, self.revision,
                 kept.rollback_all_to or "-", len(kept.ramps))
        self._show_age()

    async def run(self) -> None:
        """Follow the controller until cancelled."""
        client = JsonClient(self.url, timeout_s=HOLD_S + 5.0)
        try:
            await asyncio.gather(self._poll_forever(client), self._age_forever())
        finally:
            await client.close()

    async def _poll_forever(self, client: JsonClient) -> None:
        while True:
            client.set_token(self.token())
            asked = time.monotonic()
            try:
                # Until it has answered once, the controller is asked not to hold the poll: a held poll
                # would leave this instance unsure whether it is connected.
                wait = HOLD_S if self.connected else 0.0
                body = await client.get(PATH, {"revision": self.revision or "", "wait": f"{wait:g}"})
                overlay = shares.from_document(body)
                revision = body.get("revision")
                if not isinstance(revision, str) or not revision:
                    raise ValueError("no revision")
            except (FetchError, ValueError) as error:
                self._lost(str(error) if isinstance(error, FetchError) else f"unreadable shares: {error}")
                await asyncio.sleep(RETRY_S)
                continue
            changed = revision != self.revision
            try:
                self._heard(body, overlay, revision)
            except Exception:
                log.exception("control.error revision=%s; the shares in force stay", revision)
                await asyncio.sleep(RETRY_S)
                continue
            if not changed and wait and time.monotonic() - asked < MIN_POLL_S:
                await asyncio.sleep(MIN_POLL_S - (time.monotonic() - asked))     # a controller that holds nothing

    def _heard(self, body: dict[str, Any], overlay: Overlay, revision: str) -> None:
        if not self.connected:
            log.info("control.connected controller=%s revision=%s", self.url, revision)
        self.connected, self.last_error = True, None
        self.heard_at = self.clock()
        self.metrics.connected.set(1)
        self._show_age()
        self._check_config(body.get("config_version"))
        if revision == self.revision:
            return
        self.publish(overlay)
        self.revision = revision
        log.info("control.applied controller=%s revision=%s rollback_all=%s ramps=%s", self.url, revision,
                 overlay.rollback_all_to or "-",
                 ",".join(f"{route}:{dict(entry.split)}" for route, entry in overlay.ramps.items()) or "-")
        try:
            atomic_write(self.path, shares.encode(overlay))
        except OSError as error:
            log.error("control.unkept file=%s error=%s: in force now, but a restart while the controller is away "
                      "would serve the config's shares", self.path, error)

    def _lost(self, reason: str) -> None:
        if self.connected or reason != self.last_error:
            log.warning("control.lost controller=%s reason=%s; the shares in force stay (revision %s)", self.url,
                        reason, self.revision or "none: the config's")
        self.connected, self.last_error = False, reason
        self.metrics.connected.set(0)

    def _check_config(self, theirs: Any) -> None:
        runtime = self.holder.runtime
        pair = (runtime.config.sha256 if runtime else None, theirs if isinstance(theirs, str) else None)
        if pair[0] != pair[1] and pair != self._config_mismatch:
            # The shares of a ramp apply only to the ramp block they were decided for: a route whose block
            # differs here keeps this config's split until both read the same file.
            log.warning("control.config_differs mine=%s controller=%s", (pair[0] or "-")[:12], (pair[1] or "-")[:12])
        self._config_mismatch = pair if pair[0] != pair[1] else None

    async def _age_forever(self) -> None:
        while True:
            if self.connected:
                self.heard_at = self.clock()      # a poll is held open: any change would arrive at once
            self._show_age()
            await asyncio.sleep(TICK_S)

    def _show_age(self) -> None:
        self.metrics.overlay_age.set(max(0.0, self.clock() - self.heard_at))

    def status(self) -> dict[str, Any]:
        """How this instance follows its controller, for /health/ready."""
        return {"controller": self.url, "connected": self.connected, "revision": self.revision,
                "overlay_age_s": round(max(0.0, self.clock() - self.heard_at), 1), "last_error": self.last_error}

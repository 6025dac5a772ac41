"""The controller's side of scale-out: the shares it decides, served to every proxy instance by long-poll.

    GET /control/shares?revision=R&wait=S

answers at once when the shares in force are not revision R (or no R is
given); otherwise it holds the request until they change, or for S seconds (at
most MAX_WAIT_S), and answers with the same ones. The answer is the shares
file's document (overlay.encode) with its `revision`, the version of the config
the controller runs, and when the controller started. The admin guard asks the
admin token of these reads too: the shares say where traffic goes.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import overlay as shares
from ..overlay import EMPTY, Overlay
from .api import problem

PATH = "/control/shares"
MAX_WAIT_S = 30.0


class SharesFeed:
    """The overlay the controller last published, and the instances' polls waiting for the next one."""

    def __init__(self, config_version: Callable[[], str | None], *, clock: Callable[[], float] = time.time) -> None:
        self.config_version = config_version
        self.overlay: Overlay = EMPTY
        self.revision = shares.revision(EMPTY)
        self.started_at = clock()
        self.closing = False
        self._changed = asyncio.Event()

    def publish(self, overlay: Overlay) -> None:
        """Called on the event loop that serves the polls."""
        revision = shares.revision(overlay)
        if revision != self.revision:
            self.overlay, self.revision = overlay, revision
            self._wake()

    def close(self) -> None:
        """The controller stops: every poll held now is answered at once."""
        self.closing = True
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def document(self) -> dict[str, Any]:
        return {**json.loads(shares.encode(self.overlay)), "revision": self.revision,
                "config_version": self.config_version(), "controller_started_at": self.started_at}

    async def next_after(self, revision: str | None, wait_s: float) -> dict[str, Any]:
        """The shares in force, once they are not `revision` or `wait_s` has passed."""
        if revision == self.revision and wait_s > 0 and not self.closing:
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), wait_s)
            except asyncio.TimeoutError:
                pass
        return self.document()


def feed_routes(feed: SharesFeed) -> list[Route]:
    async def next_shares(request: Request) -> Response:
        revision = request.query_params.get("revision") or None
        try:
            wait_s = float(request.query_params.get("wait", "0"))
        except ValueError:
            wait_s = math.nan
        if not 0 <= wait_s <= MAX_WAIT_S:
            return problem(400, "Bad wait", f"wait must be a number of seconds from 0 to {MAX_WAIT_S:g}")
        return JSONResponse(await feed.next_after(revision, wait_s))

    return [Route(PATH, next_shares, methods=["GET"])]

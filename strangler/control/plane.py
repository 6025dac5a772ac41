"""Where controllers are assembled: beside the proxy (the local metrics, publishing to its runtime), or in a
process of its own (figures from Prometheus, publishing to every instance through the shares feed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .. import overlay as shares_file
from ..overlay import Overlay
from ..reload import ConfigHolder
from .controller import Controller
from .feed import SharesFeed
from .figures import GateFigures
from .local import RegistryFigures
from .store import StateStore, atomic_write


def local_controller(holder: ConfigHolder, *, workers: bool = False) -> Controller:
    """A controller for the config `holder` runs; with `workers`, its shares also go to the workers' file.

    The state directory is the one the config names at start.
    """
    assert holder.runtime is not None, "load the config first"
    state_dir = holder.runtime.config.state_dir
    publish: Callable[[Overlay], None] = holder.apply_overlay
    if workers:
        publish = _to_workers(holder, state_dir)
    return Controller(lambda: holder.runtime.config if holder.runtime else None, RegistryFigures(holder.metrics),
                      publish, holder.metrics.control, StateStore(state_dir))


def _to_workers(holder: ConfigHolder, state_dir: str) -> Callable[[Overlay], None]:
    path = Path(state_dir) / shares_file.SHARES_FILE

    def publish(overlay: Overlay) -> None:
        # The parent's own runtime serves the admin API's view of the routes; each worker reads
        # the file within its watch interval (reload.py). A file that cannot be written raises,
        # and the controller tries again on its next tick.
        holder.apply_overlay(overlay)
        atomic_write(path, shares_file.encode(overlay))

    return publish


def standalone_controller(holder: ConfigHolder, figures: GateFigures, feed: SharesFeed) -> Controller:
    """`strangler control`: the controller alone; its shares go to its own runtime (GET /routes) and the feed."""
    assert holder.runtime is not None, "load the config first"

    def publish(overlay: Overlay) -> None:
        holder.apply_overlay(overlay)
        feed.publish(overlay)

    return Controller(lambda: holder.runtime.config if holder.runtime else None, figures, publish,
                      holder.metrics.control, StateStore(holder.runtime.config.state_dir))

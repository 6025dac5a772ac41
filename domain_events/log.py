"""Where the events library's log lines go when a side runs on its own."""

from __future__ import annotations

import logging


def log_to_stderr(level: str) -> None:
    """Outbox, inbox and saga lines (loggers under `strangler.`) to stderr, beside uvicorn's own."""
    logger = logging.getLogger("strangler")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level.upper() if level.upper() in logging.getLevelNamesMapping() else "INFO")

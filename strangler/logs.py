"""Logging set-up: one line per event, `event key=value`, the same in every worker."""

from __future__ import annotations

import logging
import os

from .errors import ResponseAborted

LEVEL_ENV = "STRANGLER_LOG_LEVEL"
JSON_ACCESS_LOGGER = "strangler.access.json"


class _AbortedResponseFilter(logging.Filter):
    """uvicorn logs a traceback for an app that aborts a response on purpose; ours says why in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ResponseAborted)


def configure_logging(level: str | None = None) -> None:
    level = (level or os.environ.get(LEVEL_ENV) or "info").upper()
    os.environ[LEVEL_ENV] = level        # spawned workers inherit it
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s", force=True)
    logging.getLogger("uvicorn.error").addFilter(_AbortedResponseFilter())
    # `access_log: {format: json}` lines are JSON from the first byte, for log shippers: no prefix.
    json_access = logging.getLogger(JSON_ACCESS_LOGGER)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    json_access.handlers = [handler]
    json_access.propagate = False

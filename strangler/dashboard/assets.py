"""The page's files, served from package data as they are: no build step, nothing from the internet."""

from __future__ import annotations

import functools
from importlib import resources

TYPES = {
    "index.html": "text/html; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
# The page loads its own files and talks to its own listener, nothing else; no site may frame it
# (a framed page could be tricked into pressing "roll back everything").
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@functools.cache
def asset(name: str) -> tuple[bytes, str] | None:
    """The file's bytes and media type, or None for a name the page does not have."""
    media_type = TYPES.get(name)
    if media_type is None:
        return None
    return resources.files(__package__).joinpath("static", name).read_bytes(), media_type

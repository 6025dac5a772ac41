"""TLS contexts: a listener's certificate that follows its files, and an upstream's client context."""

from __future__ import annotations

import logging
import os
import ssl
import time
from typing import Any

from .config.model import ListenerTls, UpstreamTls

log = logging.getLogger("strangler.tls")

# How often a handshake may look at the certificate files (a stat of each) for a change.
CHECK_INTERVAL_S = 1.0


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


def _server_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    return context


class ListenerCertificate:
    """A listener's SSLContext whose certificate follows its files, without a restart.

    Given to uvicorn as `ssl_context_factory`, so each worker process builds its own. Every
    handshake passes through the SNI callback (with or without SNI); at most once a second it
    compares the files' inode, size and mtime with those loaded, and on a change loads them into
    a new context that this and later handshakes use. A pair that does not load (half-written,
    or a key that does not match) is logged and the last good one kept until the files change again.
    """

    def __init__(self, tls: ListenerTls) -> None:
        self.cert = tls.cert
        self.key = tls.key
        self._current: ssl.SSLContext | None = None
        self._loaded: tuple[object, object] | None = None
        self._checked_at = 0.0

    def __getstate__(self) -> dict[str, Any]:
        # Pickled into worker processes before it is used: only the file names travel.
        return {"cert": self.cert, "key": self.key}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(ListenerTls(cert=state["cert"], key=state["key"]))  # type: ignore[misc]

    def __call__(self, _config: object = None, _default: object = None) -> ssl.SSLContext:
        """The context to listen with (uvicorn calls this once, when its config loads)."""
        self._loaded = (_stamp(self.cert), _stamp(self.key))
        self._checked_at = time.monotonic()
        listening = self._current = _server_context(self.cert, self.key)
        listening.sni_callback = self._on_client_hello
        return listening

    @property
    def context(self) -> ssl.SSLContext | None:
        """The context handshakes use now."""
        return self._current

    def _on_client_hello(self, connection: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        now = time.monotonic()
        if now - self._checked_at >= CHECK_INTERVAL_S:
            self._checked_at = now
            self.refresh()
        if self._current is not None:
            connection.context = self._current

    def refresh(self) -> bool:
        """Load the files again if they changed since they were loaded; True when a new pair is in use."""
        stamps = (_stamp(self.cert), _stamp(self.key))
        if stamps == self._loaded:
            return False
        try:
            fresh = _server_context(self.cert, self.key)
        except (ssl.SSLError, OSError) as error:
            # Often a renewal caught between writing the certificate and the key: tried again later.
            log.warning("tls.reload_failed cert=%s key=%s error=%s", self.cert, self.key, error)
            return False
        self._current, self._loaded = fresh, stamps
        log.info("tls.reloaded cert=%s", self.cert)
        return True


def upstream_context(tls: UpstreamTls) -> ssl.SSLContext:
    """The client context for an https:// upstream: its CA file or the system's, checks on unless turned off."""
    context = ssl.create_default_context(cafile=tls.ca_file)
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context

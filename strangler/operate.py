"""`strangler rollback-all`: ask a running proxy's admin API to send every route back to legacy (or lift it).

It reads the admin address and token from the config file even when the rest
of that file is invalid, since that may be why everything goes back to legacy.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

from . import __version__
from .admin_guard import TOKEN_ENV
from .config.loader import load_admin
from .config.model import Config

TIMEOUT_S = 10.0


def default_admin_url(config_path: str) -> tuple[str, str | None]:
    """The admin listener's URL and the token, as the config names them (127.0.0.1:9000 and no token if not)."""
    found = load_admin(config_path)
    address, token = found if found is not None else (Config().admin, None)
    host = "127.0.0.1" if address.host in ("0.0.0.0", "::", "") else address.host
    host = f"[{host}]" if ":" in host else host
    scheme = "https" if address.tls is not None else "http"     # admin.tls: checked against the system's CAs
    return f"{scheme}://{host}:{address.port}", os.environ.get(TOKEN_ENV) or token


def rollback_all(admin_url: str | None, config_path: str, reason: str, *, lift: bool) -> int:
    url, token = default_admin_url(config_path)
    url = (admin_url or url).rstrip("/") + ("/rollback-all/lift" if lift else "/rollback-all")
    request = urllib.request.Request(url, method="POST", data=json.dumps({"reason": reason}).encode(), headers={
        "Content-Type": "application/json", "User-Agent": f"strangler-cli/{__version__}",
        **({"Authorization": f"Bearer {token}"} if token else {}),
    })
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            document = json.loads(response.read())
    except urllib.error.HTTPError as error:
        detail = error.read().decode("utf-8", "replace")
        try:
            detail = json.loads(detail).get("detail", detail)
        except (ValueError, AttributeError):
            pass
        hint = f" (set {TOKEN_ENV} or admin.token)" if error.code == 401 else ""
        print(f"strangler: {url} answered {error.code}: {detail}{hint}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError, ValueError) as error:
        print(f"strangler: cannot reach {url}: {getattr(error, 'reason', error)}", file=sys.stderr)
        return 1
    print(_summary(document, lift))
    return 0


def _summary(document: dict, lift: bool) -> str:
    if lift:
        return "roll back all was not active" if document.get("already_lifted") else "roll back all lifted"
    lines = [("roll back all was already active" if document.get("already_active") else "roll back all active")
             + f" since {document.get('since')}: {document.get('reason')}",
             f"  back to {document.get('legacy')}: {', '.join(document.get('routes', [])) or 'no route'}"]
    lines += [f"  left as it is: {route} ({why})" for route, why in document.get("left", {}).items()]
    if document.get("persisted") is False:
        lines.append("  warning: not written to the state directory (see the proxy's log): a restart would forget it")
    return "\n".join(lines)

"""strangler: a strangler-fig migration proxy.

Serve it with `strangler run`; to embed it, load a config and hand ASGI requests to
`ProxyApp(ConfigHolder(path, Metrics()))` after `holder.reload()`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Config", "ConfigError", "ConfigHolder", "Metrics", "ProxyApp", "__version__", "load_config", "parse_config",
]

# Loaded on first use: importing the package (or any module in it) must not import
# prometheus_client before the command line has set PROMETHEUS_MULTIPROC_DIR for
# `--workers`, nor the whole proxy for `strangler check`.
_HOMES = {
    "Config": "strangler.config.model",
    "ConfigError": "strangler.config.loader",
    "load_config": "strangler.config.loader",
    "parse_config": "strangler.config.loader",
    "ConfigHolder": "strangler.reload",
    "Metrics": "strangler.metrics",
    "ProxyApp": "strangler.app",
}

if TYPE_CHECKING:
    from .app import ProxyApp
    from .config.loader import ConfigError, load_config, parse_config
    from .config.model import Config
    from .metrics import Metrics
    from .reload import ConfigHolder


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'strangler' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

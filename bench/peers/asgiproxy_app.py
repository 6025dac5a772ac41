"""asgiproxy (PyPI) in front of the bench origin, served by uvicorn from bench/.venv-peers.

BENCH_ORIGIN is the origin's base URL. The concurrency cap (asgiproxy's default is 20
requests to the upstream at once) is raised to strangler's default bulkhead, 256, so that
neither side is throttled by a limit the other does not have; BENCH_ASGIPROXY_CONCURRENCY
overrides it.
"""

from __future__ import annotations

import os
from urllib.parse import urlparse

from asgiproxy.config import BaseURLProxyConfigMixin, ProxyConfig
from asgiproxy.context import ProxyContext
from asgiproxy.simple_proxy import make_simple_proxy_app

ORIGIN = os.environ["BENCH_ORIGIN"]
CONCURRENCY = int(os.environ.get("BENCH_ASGIPROXY_CONCURRENCY", "256"))


class OriginConfig(BaseURLProxyConfigMixin, ProxyConfig):
    upstream_base_url = ORIGIN
    rewrite_host_header = urlparse(ORIGIN).netloc


context = ProxyContext(OriginConfig(), max_concurrency=CONCURRENCY)
app = make_simple_proxy_app(context)

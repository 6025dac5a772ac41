"""The root URLconf: every app's urlpatterns, mounted under its prefix, as Django's include() does."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route, WebSocketRoute

from legacy_monolith.accounts import urls as accounts
from legacy_monolith.core import urls as core
from legacy_monolith.events import urls as events
from legacy_monolith.inventory import urls as inventory
from legacy_monolith.orders import urls as orders
from legacy_monolith.payments import urls as payments
from legacy_monolith.shipping import urls as shipping


def include(prefix: str, patterns: list[Route | WebSocketRoute], app_name: str) -> list[BaseRoute]:
    # Flattened rather than Mount()ed: one router, so one APPEND_SLASH and one 404 policy.
    return [
        WebSocketRoute(prefix + route.path, route.endpoint, name=f"{app_name}:{route.name}")
        if isinstance(route, WebSocketRoute)
        else Route(prefix + route.path, route.endpoint, methods=route.methods, name=f"{app_name}:{route.name}")
        for route in patterns
    ]


urlpatterns = [
    *include("", core.urlpatterns, core.app_name),
    *include("/accounts", accounts.urlpatterns, accounts.app_name),
    *include("/inventory", inventory.urlpatterns, inventory.app_name),
    *include("/orders", orders.urlpatterns, orders.app_name),
    *include("/payments", payments.urlpatterns, payments.app_name),
    *include("/shipping", shipping.urlpatterns, shipping.app_name),
    *include("/api/inventory", inventory.api_urlpatterns, inventory.app_name),
    *include("/api/orders", orders.api_urlpatterns, orders.app_name),
    *include("/api/payments", payments.api_urlpatterns, payments.app_name),
    *include("/api/shipping", shipping.api_urlpatterns, shipping.app_name),
    *include("", events.urlpatterns, events.app_name),
]

from domain_events import internal

app_name = "events"

# /events/, /outbox/..., /metrics: for the other sides and operators, refused through the proxy.
urlpatterns = internal.routes

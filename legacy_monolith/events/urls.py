from extracted_services.common import internal

app_name = "events"

# /events/, /outbox/..., /metrics: for the other sides and operators, refused through the proxy.
urlpatterns = internal.routes

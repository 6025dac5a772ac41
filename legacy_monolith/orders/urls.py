from starlette.routing import Route, WebSocketRoute

from legacy_monolith.orders import views

app_name = "orders"

urlpatterns = [
    Route("/", views.order_list, name="order-list"),
    Route("/new/", views.order_create, methods=["GET", "POST"], name="order-create"),
    Route("/export.csv", views.order_export, name="order-export"),
    Route("/{order_id:int}/", views.order_detail, name="order-detail"),
    WebSocketRoute("/{order_id:int}/live/", views.order_status_live, name="order-live"),
]

api_urlpatterns = [
    Route("/", views.api_order_list, methods=["GET"], name="api-order-list"),
    Route("/", views.api_order_create, methods=["POST"], name="api-order-create"),
    Route("/{order_id:int}/", views.api_order_detail, name="api-order-detail"),
]

from starlette.routing import Route

from extracted_services.orders_service import views

# Reads only: in the shipped config, POST /api/orders/ still goes to the monolith.
urlpatterns = [
    Route("/api/orders/", views.order_list, name="order-list"),
    Route("/api/orders/{order_id:int}/", views.order_detail, name="order-detail"),
]

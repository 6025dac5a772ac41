from starlette.routing import Route

from extracted_services.inventory_service import views

urlpatterns = [
    Route("/api/inventory/", views.product_list, name="product-list"),
    Route("/api/inventory/reservations/release/", views.release, methods=["POST"], name="release"),
    Route("/api/inventory/{sku}/", views.product_detail, name="product-detail"),
    Route("/api/inventory/{sku}/reserve/", views.reserve, methods=["POST"], name="reserve"),
]

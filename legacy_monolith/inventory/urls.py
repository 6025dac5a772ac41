from starlette.routing import Route

from legacy_monolith.inventory import views

app_name = "inventory"

urlpatterns = [
    Route("/", views.product_list, name="product-list"),
    Route("/{sku}/", views.product_detail, name="product-detail"),
]

api_urlpatterns = [
    Route("/", views.api_product_list, name="api-product-list"),
    Route("/reservations/release/", views.api_release, methods=["POST"], name="api-release"),
    Route("/{sku}/", views.api_product_detail, name="api-product-detail"),
    Route("/{sku}/reserve/", views.api_reserve, methods=["POST"], name="api-reserve"),
]

from starlette.routing import Route

from legacy_monolith.shipping import views

app_name = "shipping"

urlpatterns = [
    Route("/", views.shipment_list, name="shipment-list"),
    Route("/{shipment_id:int}/", views.shipment_detail, name="shipment-detail"),
]

api_urlpatterns = [
    Route("/", views.api_shipment_list, methods=["GET"], name="api-shipment-list"),
]

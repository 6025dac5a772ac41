from starlette.routing import Route

from legacy_monolith.payments import views

app_name = "payments"

urlpatterns = [
    Route("/", views.payment_list, name="payment-list"),
]

api_urlpatterns = [
    Route("/", views.api_payment_list, methods=["GET"], name="api-payment-list"),
    Route("/", views.api_charge, methods=["POST"], name="api-charge"),
    Route("/refund/", views.api_refund, methods=["POST"], name="api-refund"),
    Route("/{payment_id:int}/", views.api_payment_detail, name="api-payment-detail"),
]

from starlette.routing import Route

from extracted_services.payments_service import views

urlpatterns = [
    Route("/api/payments/", views.payment_list, methods=["GET"], name="payment-list"),
    Route("/api/payments/", views.charge, methods=["POST"], name="charge"),
    Route("/api/payments/refund/", views.refund, methods=["POST"], name="refund"),
    Route("/api/payments/{payment_id:int}/", views.payment_detail, name="payment-detail"),
]

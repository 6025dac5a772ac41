from starlette.routing import Route

from extracted_services.payments_service import views

urlpatterns = [
    Route("/api/payments/", views.payment_list, name="payment-list"),
    Route("/api/payments/{payment_id:int}/", views.payment_detail, name="payment-detail"),
]

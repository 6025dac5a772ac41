from starlette.routing import Route

from extracted_services.orders_service import views

# In the shipped config POST /api/orders/ still goes to the monolith; here it runs the order saga.
urlpatterns = [
    Route("/api/orders/", views.order_list, methods=["GET"], name="order-list"),
    Route("/api/orders/", views.order_create, methods=["POST"], name="order-create"),
    Route("/api/orders/{order_id:int}/", views.order_detail, name="order-detail"),
    Route("/sagas/", views.saga_list, name="saga-list"),
    Route("/sagas/{order_id:int}/retry/", views.saga_retry, methods=["POST"], name="saga-retry"),
]

"""Which events from the extracted services the monolith applies to its tables, and with what.

Each handler writes inside the inbox's transaction and records no event of its
own: a copy of someone else's change is not news to pass on.
"""

from __future__ import annotations

from legacy_monolith.inventory import models as inventory
from legacy_monolith.orders import models as orders
from legacy_monolith.payments import models as payments

EVENT_HANDLERS = {
    "OrderCreated": orders.apply_order_created,         # from orders_service (its saga)
    "OrderConfirmed": orders.apply_order_confirmed,
    "OrderCancelled": orders.apply_order_cancelled,
    "OrderShipped": orders.apply_order_shipped,
    "StockReserved": inventory.apply_stock_reserved,    # from inventory_service
    "StockReleased": inventory.apply_stock_released,
    "PaymentCaptured": payments.apply_payment_recorded,  # from payments_service, once it takes payments
    "PaymentPending": payments.apply_payment_recorded,
    "PaymentRefunded": payments.apply_payment_refunded,
}

"""Demo data: a few customers, a coffee-gear catalogue, and a day of orders, some shipped.

Deterministic (a fixed random seed and fixed timestamps), so the monolith and the
services that import from it can be compared value for value.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from legacy_monolith.accounts import models as accounts
from legacy_monolith.db import Database
from legacy_monolith.events import models as events
from legacy_monolith.orders import models as orders
from legacy_monolith.shipping import models as shipping

USERS = [  # email, full name, password, staff
    ("alice@example.com", "Alice Liddell", "wonderland", False),
    ("bob@example.com", "Bob Builder", "canwefixit", True),
    ("carol@example.com", "Carol Danvers", "higherfurther", False),
]
PRODUCTS = [  # sku, name, price in cents, units on hand
    ("BNS-1KG", "House blend beans, 1 kg", 1890, 500),
    ("CUP-SET", "Cappuccino cups, set of 6", 2990, 120),
    ("ESP-001", "Espresso machine", 24900, 40),
    ("FLT-100", "Paper filters, 100", 490, 1000),
    ("GRN-250", "Burr grinder", 8900, 60),
    ("KTL-GSN", "Gooseneck kettle", 5490, 50),
    ("MLK-FRT", "Milk frother", 3490, 80),
    ("SCL-DIG", "Digital scale", 2290, 75),
]
ORDER_COUNT = 24
SHIPPED_COUNT = 10
RANDOM_SEED = 20240301
START = datetime(2024, 3, 1, 9, 0, tzinfo=timezone.utc)

# Children before parents, so foreign keys never dangle mid-reset.
TABLES = ("shipping_shipment", "payments_payment", "orders_orderline", "inventory_reservation", "orders_order",
          "inventory_product", "core_upload", "accounts_user", "payments_voidedchargekey",
          "inventory_cancelledreservationkey", *events.TABLES)


def reset(database: Database) -> None:
    with database.transaction() as conn:
        for table in TABLES:
            conn.execute(f"DELETE FROM {table}")
        conn.execute("DELETE FROM sqlite_sequence")  # ids start at 1 again


def seed(database: Database) -> dict[str, int]:
    """Replace all data with the demo data set; return how many rows of each kind."""
    reset(database)
    for email, name, password, staff in USERS:
        accounts.create_user(database, email=email, password=password, full_name=name, is_staff=staff,
                             date_joined=START.isoformat(timespec="seconds"))
    with database.transaction() as conn:
        conn.executemany("INSERT INTO inventory_product (sku, name, price_cents, on_hand) VALUES (?, ?, ?, ?)",
                         PRODUCTS)
    rng = random.Random(RANDOM_SEED)
    customers = [email for email, *_ in USERS] + ["guest1@example.org", "guest2@example.org"]
    for number in range(ORDER_COUNT):
        lines = [(sku, rng.randint(1, 3)) for sku, *_ in rng.sample(PRODUCTS, rng.randint(1, 3))]
        created_at = (START + timedelta(minutes=37 * number)).isoformat(timespec="seconds")
        order = orders.place_order(database, customer_email=rng.choice(customers), lines=lines,
                                   payment_method="invoice" if number % 5 == 4 else "card", created_at=created_at)
        if number < SHIPPED_COUNT and order["status"] == "paid":
            shipped_at = (START + timedelta(minutes=37 * number, hours=20)).isoformat(timespec="seconds")
            shipping.ship_order(database, order_id=order["id"], carrier=rng.choice(["DHL", "UPS", "PostNL"]),
                                tracking_number=f"TRK{rng.randrange(10**9, 10**10)}", shipped_at=shipped_at)
    # The seed is history, not news: the services start from a copy of it (import-from-legacy).
    with database.transaction() as conn:
        for table in events.TABLES:
            conn.execute(f"DELETE FROM {table}")
    return {"users": len(USERS), "products": len(PRODUCTS), "orders": ORDER_COUNT}

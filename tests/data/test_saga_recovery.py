"""orders_service killed with SIGKILL in the middle of a saga: on restart it finishes or compensates.

orders_service runs as a real child process; inventory_service and payments_service
serve in-process so the test can hold a charge at the gate. The kill lands after the
stock step, while the charge is in flight; the restarted process resumes from the
saga's last committed state and runs the step again with the same idempotency key.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.data.conftest import Shop
from tests.support.servers import REPO, free_port, wait_until

ORDER = {"customer_email": "grace@example.com", "payment_method": "card",
         "lines": [{"sku": "KTL-GSN", "quantity": 2}, {"sku": "SCL-DIG", "quantity": 1}]}
TOTAL_CENTS = 2 * 5490 + 2290


class OrdersProcess:
    """`python -m extracted_services.orders_service runserver`, as the demo starts it."""

    def __init__(self, shop: Shop, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [sys.executable, "-m", "extracted_services.orders_service", "runserver", "--port", str(self.port),
                     "--data-dir", str(shop.data_dir), "--log-level", "info",
                     "--peer", f"inventory={shop.url('inventory')}", "--peer", f"payments={shop.url('payments')}"]
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "OrdersProcess":
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.args, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        wait_until(self._ready, timeout_s=15, what=f"orders_service ready (log: {self.log_path})")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"orders_service exited:\n{self.log_path.read_text()}")
        try:
            return httpx.get(self.url + "/health/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def orders_process(tmp_path: Path) -> Iterator[list[OrdersProcess]]:
    started: list[OrdersProcess] = []
    yield started
    for process in started:
        process.stop()


def place_in_background(url: str) -> threading.Thread:
    """POST the order from a thread: its connection dies with the process, and that is expected."""

    def place() -> None:
        try:
            httpx.post(url + "/api/orders/", json=ORDER, timeout=30)
        except httpx.HTTPError:
            pass

    thread = threading.Thread(target=place, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("after_restart", ["finishes", "compensates"])
def test_a_saga_killed_after_the_stock_step_resumes_on_restart(start_shop, orders_process, tmp_path: Path,
                                                                after_restart: str) -> None:
    shop = start_shop(payments="payments", sides=("inventory", "payments"))
    faults = shop.apps["payments"].state.faults
    faults.hold = threading.Event()
    reserved = "SELECT sku, reserved FROM products WHERE sku IN ('KTL-GSN', 'SCL-DIG') ORDER BY sku"
    before = dict(shop.query("inventory", reserved))

    first = OrdersProcess(shop, tmp_path / "orders.log").start()
    orders_process.append(first)
    client = place_in_background(first.url)
    wait_until(lambda: faults.charges_received == 1, timeout_s=10, what="the charge to reach payments")
    [(order_id, state)] = shop.query("orders", "SELECT order_id, state FROM sagas WHERE state NOT IN"
                                               " ('completed', 'compensated')")
    assert state == "stock_reserved"
    first.kill()
    client.join(timeout=10)

    # The charge that was in flight goes through after all: the answer is what got lost.
    faults.hold.set()
    wait_until(lambda: shop.query("payments", "SELECT count(*) FROM payments WHERE order_id = ?", (order_id,))
               == [(1,)], timeout_s=10, what="the held charge to commit")
    faults.hold = None
    if after_restart == "compensates":
        faults.decline_next = 1000               # from now on payments refuse, the repeated charge too

    second = OrdersProcess(shop, tmp_path / "orders.log").start()
    orders_process.append(second)
    finished = {"finishes": "completed", "compensates": "compensated"}[after_restart]
    wait_until(lambda: shop.query("orders", "SELECT state FROM sagas WHERE order_id = ?", (order_id,))
               == [(finished,)], timeout_s=15, what=f"the saga to be {finished}")

    order = httpx.get(f"{second.url}/api/orders/{order_id}/", timeout=5).json()
    payments = shop.query("payments", "SELECT amount_cents, status FROM payments WHERE order_id = ?", (order_id,))
    holds = shop.query("inventory", "SELECT sku, quantity, released_at IS NULL FROM reservations"
                                    " WHERE order_id = ? ORDER BY sku", (order_id,))
    if after_restart == "finishes":
        assert order["status"] == "paid"
        assert payments == [(TOTAL_CENTS, "captured")]            # charged once, not twice
        assert holds == [("KTL-GSN", 2, 1), ("SCL-DIG", 1, 1)]    # reserved once, still held
        assert dict(shop.query("inventory", reserved)) == {"KTL-GSN": before["KTL-GSN"] + 2,
                                                           "SCL-DIG": before["SCL-DIG"] + 1}
    else:
        assert order["status"] == "cancelled"
        assert payments == [(TOTAL_CENTS, "refunded")]            # the one charge, refunded
        assert holds == [("KTL-GSN", 2, 0), ("SCL-DIG", 1, 0)]    # reserved once, released
        assert dict(shop.query("inventory", reserved)) == before
    assert "saga.resumed order=%d" % order_id in (tmp_path / "orders.log").read_text()

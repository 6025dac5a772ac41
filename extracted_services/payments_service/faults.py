"""Test-only fault injection for the charge endpoint: inert unless a test changes it.

The app keeps one on `app.state.faults`; a test serving the app in-process sets
counters on it to make the next charges fail, be declined, answer slowly after
charging (so the caller times out and retries), or wait at a gate before charging.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass
class PaymentFaults:
    fail_next: int = 0                      # answer 503 without charging
    decline_next: int = 0                   # answer 402 payment_declined without charging
    slow_next: int = 0                      # charge, then wait slow_answer_s before answering
    slow_answer_s: float = 0.0
    hold: threading.Event | None = None     # charges wait here (up to hold_timeout_s), before any other fault
    hold_timeout_s: float = 30.0
    charges_received: int = 0               # every POST /api/payments/ that reached the handler

    def take(self, name: str) -> bool:
        """Use up one of the `name` faults, if any is left."""
        left = getattr(self, name)
        if left > 0:
            setattr(self, name, left - 1)
            return True
        return False

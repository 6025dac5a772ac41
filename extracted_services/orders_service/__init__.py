"""The orders service: order reads, and placing orders through the order saga (stock, payment, confirmation)."""

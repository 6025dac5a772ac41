"""The orders service: order reads first; placing orders moves here with the saga (issue 8)."""

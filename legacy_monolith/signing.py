"""Tamper-proof values for cookies, after django.core.signing: payload.timestamp.signature."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

from legacy_monolith import settings


class BadSignature(Exception):
    """The value was altered, signed with another key or salt, or has expired."""


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(value: str, salt: str) -> str:
    # The salt keeps a value signed for one purpose (sessions) from passing as another.
    key = hashlib.sha256((salt + "signer" + settings.SECRET_KEY).encode()).digest()
    return _b64encode(hmac.new(key, value.encode(), hashlib.sha256).digest())


def dumps(obj: Any, *, salt: str, now: float | None = None) -> str:
    payload = _b64encode(json.dumps(obj, separators=(",", ":"), sort_keys=True).encode())
    value = f"{payload}.{int(now if now is not None else time.time()):x}"
    return f"{value}.{_signature(value, salt)}"


def loads(signed: str, *, salt: str, max_age_s: float, now: float | None = None) -> Any:
    try:
        value, signature = signed.rsplit(".", 1)
        payload, timestamp = value.rsplit(".", 1)
        issued_at = int(timestamp, 16)
    except ValueError:
        raise BadSignature("malformed") from None
    if not hmac.compare_digest(signature, _signature(value, salt)):
        raise BadSignature("signature does not match")
    if (now if now is not None else time.time()) - issued_at > max_age_s:
        raise BadSignature("expired")
    try:
        return json.loads(_b64decode(payload))
    except ValueError:
        raise BadSignature("payload is not JSON") from None

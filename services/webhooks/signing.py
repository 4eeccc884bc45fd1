"""Standard Webhooks signing: ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``.

The signature is base64(HMAC-SHA256(secret, "<id>.<timestamp>.<body>")) sent as
``v1,<signature>``; secrets are ``whsec_<base64 key>``. The id stays the same across
retries of one delivery, so receivers can de-duplicate; the timestamp lets them refuse
replays outside a tolerance window.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping

from services.errors import InvalidParameter, Unauthorized

SECRET_PREFIX = "whsec_"


def generate_secret() -> str:
    """A new signing secret: 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature of one delivery."""
    key = _key(secret)
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(
    secret: str, message_id: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    """The three headers a delivery carries."""
    stamp = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": signature(secret, message_id, stamp, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    tolerance_s: int = 300,
    now: float | None = None,
) -> None:
    """Raise ``Unauthorized`` unless one of the signatures matches within the tolerance."""
    try:
        message_id = headers["webhook-id"]
        stamp = int(headers["webhook-timestamp"])
        offered = headers["webhook-signature"].split()
    except (KeyError, ValueError) as exc:
        raise Unauthorized(f"missing or malformed webhook header: {exc}") from exc
    current = time.time() if now is None else now
    if abs(current - stamp) > tolerance_s:
        raise Unauthorized("webhook timestamp outside the tolerance window")
    expected = signature(secret, message_id, stamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in offered):
        raise Unauthorized("no webhook signature matches")


def _key(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidParameter("webhook secrets start with whsec_")
    try:
        return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except ValueError as exc:
        raise InvalidParameter(f"webhook secret is not valid base64: {exc}") from exc

"""The headers of one try: Standard Webhooks (made by the `standardwebhooks` library) and
WAHA's HMAC-SHA512 headers, for receivers moving from WAHA."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

from standardwebhooks import Webhook

USER_AGENT = "SessionMesh-Webhooks/1"


def signed_headers(
    delivery_id: str, secret: str, body: bytes, now: dt.datetime | None = None
) -> dict[str, str]:
    """`webhook-id`, `webhook-timestamp` and `webhook-signature` (v1: HMAC-SHA256 of
    ``id.timestamp.body`` keyed with the secret's base64-decoded bytes), and
    `X-Webhook-Hmac`: HMAC-SHA512 hex of the raw body keyed with the secret string itself
    (its UTF-8 bytes, `whsec_` included), as WAHA signs with its `hmac.key` string."""
    now = now or dt.datetime.now(dt.UTC)
    seconds = int(now.timestamp())
    text = body.decode("utf-8")
    signature = Webhook(secret).sign(delivery_id, now, text)
    waha = hmac.new(secret.encode("utf-8"), body, hashlib.sha512).hexdigest()
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": delivery_id,
        "webhook-timestamp": str(seconds),
        "webhook-signature": signature,
        "X-Webhook-Request-Id": delivery_id,
        "X-Webhook-Timestamp": str(int(now.timestamp() * 1000)),
        "X-Webhook-Hmac": waha,
        "X-Webhook-Hmac-Algorithm": "sha512",
    }

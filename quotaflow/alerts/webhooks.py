"""Standard Webhooks signatures and one delivery attempt.

The specification (standardwebhooks.com): the sender signs `<webhook-id>.<webhook-timestamp>.
<body>` with HMAC-SHA256, the key being the secret's base64 after its `whsec_` prefix, and
sends `webhook-signature: v1,<base64 signature>` with `webhook-id` and `webhook-timestamp`
(Unix seconds). The id stays the same on every retry, so a receiver de-duplicates by it; the
timestamp is each attempt's own, so a receiver's replay window holds for a late retry."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import urllib.error
import urllib.request

PREFIX = "whsec_"


class BadSecret(ValueError):
    """A secret not in the `whsec_<base64>` form."""


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret."""
    if not secret.startswith(PREFIX):
        raise BadSecret("the secret must read whsec_<base64>")
    try:
        key = base64.b64decode(secret[len(PREFIX):], validate=True)
    except binascii.Error:
        raise BadSecret("the secret after whsec_ must be base64") from None
    if len(key) < 16:
        raise BadSecret("the secret must hold at least 16 bytes")
    return key


def signature(secret: str, webhook_id: str, timestamp: int, body: str) -> str:
    """The `webhook-signature` header of `body` sent as `webhook_id` at `timestamp`."""
    signed = f"{webhook_id}.{timestamp}.{body}".encode()
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def post(url: str, secret: str, webhook_id: str, timestamp: int, body: str,
         timeout_s: float = 10.0) -> str | None:
    """POST one attempt; None when the receiver answered 2xx, else what went wrong."""
    req = urllib.request.Request(url, data=body.encode(), method="POST", headers={
        "content-type": "application/cloudevents+json", "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, webhook_id, timestamp, body)})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"unreachable: {exc}"[:300]

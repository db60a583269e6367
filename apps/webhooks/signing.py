"""Standard Webhooks signatures (https://www.standardwebhooks.com/), as OpenAI signs its webhooks.

The secret is `whsec_` + base64 of random bytes; the key is those bytes. A message is signed as
`v1,<base64 of HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{body}")>`; `webhook-signature` may list several
such signatures separated by spaces (here: the current secret's and, while a rotation's grace lasts, the old one's),
and a receiver accepts the message if one matches.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"


def secret_new() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signature(*, secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(*, secrets_: list[str], message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(secret=s, message_id=message_id, timestamp=timestamp, body=body) for s in secrets_),
    }

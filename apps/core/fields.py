"""Secrets a store must be able to read back (a webhook's signing key signs every message, so it cannot be hashed
like a password or an API key), kept encrypted at rest: a copy of the database alone does not give them away.

`EncryptedTextField` stores `fernet:<token>`: Fernet (AES-128-CBC with an HMAC-SHA256, from the `cryptography`
package) under a key derived from SECRET_KEY with HKDF. Rows are read with SECRET_KEY or any of
SECRET_KEY_FALLBACKS (Django's way to rotate the key) and written with SECRET_KEY. A value without the prefix is
read as it is: rows written before the field was encrypted (the migration that introduced it re-saves them).
`cryptography` is imported on first use: the models load without it (bench/gpu carries no compiled package).
"""

from __future__ import annotations

import base64
import functools

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models

PREFIX = "fernet:"
_PURPOSE = b"gpt-store: secrets at rest"


@functools.lru_cache(maxsize=8)
def _fernet(secret_key: str):
    from cryptography.fernet import Fernet
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_PURPOSE).derive(secret_key.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def _keys():
    """SECRET_KEY first (it encrypts), then the fallbacks (they only decrypt)."""
    from cryptography.fernet import MultiFernet

    return MultiFernet([_fernet(key) for key in [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]])


def encrypt(value: str) -> str:
    return PREFIX + _keys().encrypt(value.encode()).decode()


def decrypt(stored: str) -> str:
    if not stored.startswith(PREFIX):
        return stored  # written before encryption
    from cryptography.fernet import InvalidToken

    try:
        return _keys().decrypt(stored[len(PREFIX):].encode()).decode()
    except InvalidToken:
        raise ImproperlyConfigured(
            "A secret stored encrypted cannot be read with SECRET_KEY or SECRET_KEY_FALLBACKS: the key it was written "
            "with is gone. Put the former key in SECRET_KEY_FALLBACKS (or give the affected webhook endpoints new "
            "secrets)."
        ) from None


class EncryptedTextField(models.TextField):
    """A text field whose non-empty values are stored encrypted (see the module). It cannot be searched by value."""

    def from_db_value(self, value, expression, connection):
        return decrypt(value) if value else value

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        return encrypt(value) if value else value

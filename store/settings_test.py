"""Test settings: the same source, only faster and apart from a running `make run`.

Tests keep their runtime data (SQLite test database, filesystem broker) under var/test/, so a worker started by
a test never shares a queue with the store's own workers.
"""

import os
from pathlib import Path

os.environ.setdefault("STORE_DATA_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test"))

from .settings import *  # noqa: E402, F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Test-client tests run the engine in this process; tests that start real processes (tests/live.py) run the web
# tier on `remote` against a real model server.
INFERENCE_BACKEND = os.environ.get("INFERENCE_BACKEND", "local")

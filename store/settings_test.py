"""Test settings: the same source, only faster and apart from a running `make run`.

Tests keep their runtime data (SQLite test database, filesystem broker) under var/test/, so a worker started by
a test never shares a queue with the store's own workers.

`make test` runs the suite in two processes (pytest-xdist, `-n 2`): each has its own test database
(pytest-django adds the worker's name to it), its own data folder (var/test/gw0, var/test/gw1) and, on Redis, its
own database number (15 for gw0, 14 for gw1, ...), so that a Celery worker one of them starts never takes a task
the other sent. Child processes (tests/live.py) inherit the worker's name and come to the same places; each test
process and its children use one torch thread, as two of them share the cores.
"""

import os
import re
from pathlib import Path

XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1"... under pytest-xdist, else ""
_data = Path(os.environ.get("STORE_DATA_DIR") or Path(__file__).resolve().parent.parent / "var" / "test")
if XDIST_WORKER and _data.name != XDIST_WORKER:  # a child process inherits the folder already named for its worker
    _data = _data / XDIST_WORKER
os.environ["STORE_DATA_DIR"] = str(_data)
if XDIST_WORKER:
    # The broker the run was given, kept for child processes, which work out the same per-worker URL from it.
    _broker = os.environ.setdefault("STORE_TESTS_BROKER_URL", os.environ.get("CELERY_BROKER_URL", ""))
    _redis = re.fullmatch(r"(redis://[^/]+)/(\d+)", _broker)
    if _redis:
        os.environ["CELERY_BROKER_URL"] = f"{_redis[1]}/{int(_redis[2]) - int(XDIST_WORKER.removeprefix('gw'))}"
    for _threads in ("TORCH_NUM_THREADS", "OMP_NUM_THREADS"):
        os.environ.setdefault(_threads, "1")

from .settings import *  # noqa: E402, F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# Test-client tests run the engine in this process; tests that start real processes (tests/live.py) run the web
# tier on `remote` against a real model server.
INFERENCE_BACKEND = os.environ.get("INFERENCE_BACKEND", "local")

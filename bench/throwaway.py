"""A throwaway store for benchmarks that run the store's own services: Django on a fresh test database, a
registry and media folder in a temporary directory, the local engine, quotas out of the way.

    with throwaway_store("bench-quality-") as (work, settings, vendor):
        ...  # register a model, seed the store, run apps

The database is Django's test database (SQLite in memory, or `test_<name>` on the PostgreSQL server of
DATABASE_URL); it and the directory are removed at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def throwaway_store(prefix: str) -> Iterator[tuple[Path, object, str]]:
    work = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "store.settings_test")
    os.environ.setdefault("STORE_DATA_DIR", str(work / "data"))
    os.environ["INFERENCE_BACKEND"] = "local"
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test.utils import setup_test_environment

    settings.MODELS_REGISTRY_ROOT = work / "registry"
    settings.MEDIA_ROOT = work / "media"
    settings.INFERENCE_DTYPE = os.environ.get("INFERENCE_DTYPE", "bfloat16")  # the store's default (settings.py)
    settings.INFERENCE_QUANTIZE = os.environ.get("INFERENCE_QUANTIZE", "none")
    settings.RATE_LIMIT_USER_REQUESTS = settings.RATE_LIMIT_KEY_REQUESTS = 10**6
    settings.RATE_LIMIT_USER_TOKENS = settings.RATE_LIMIT_KEY_TOKENS = 10**9
    setup_test_environment()
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        yield work, settings, connection.vendor
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
        shutil.rmtree(work, ignore_errors=True)

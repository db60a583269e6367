"""Generation counters: cheap cache invalidation shared by every web process, on the database they all use.

`bump(name)` runs in the writer's transaction (a signal receiver or a service calls it), `current(name)` is one
indexed read with no ORM compile. A cache entry keyed by `current(name)` is valid for as long as the value is:
the counter moves in the same transaction as the change, so no process can read the new data under the old value
and no entry needs deleting (they age out). The embedded default has no shared cache server; each web process
keeps its own entries (Django's local-memory cache) and the counter on the database keeps them all honest.
"""

from __future__ import annotations

import secrets

from django.db import IntegrityError, connection, transaction

from apps.core.models import Generation

_TABLE = Generation._meta.db_table


def current(name: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT value FROM {_TABLE} WHERE name = %s", [name])
        row = cursor.fetchone()
    return row[0] if row else _create(name)


def bump(name: str) -> None:
    """Move the counter on (in the caller's transaction, when there is one)."""
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {_TABLE} SET value = value + 1 WHERE name = %s", [name])
        if not cursor.rowcount:
            _create(name)


def _create(name: str) -> int:
    """A counter starts at a random value: one made again after its table was emptied (a restore, a test's flush)
    must not meet the values, and so the cache entries, of the one before it."""
    try:
        with transaction.atomic():
            return Generation.objects.create(name=name, value=secrets.randbits(48)).value
    except IntegrityError:  # created by a concurrent caller between our read and insert
        return current(name)

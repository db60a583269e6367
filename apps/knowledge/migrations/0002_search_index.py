"""The full-text index of the chunks, on the database's own engine (see apps/knowledge/search.py):
a generated tsvector column with a GIN index on PostgreSQL, an FTS5 trigram table kept by triggers on SQLite."""

from django.db import migrations

from apps.knowledge.search import BACKENDS


def create(apps, schema_editor):
    backend = BACKENDS.get(schema_editor.connection.vendor)
    for statement in backend.SCHEMA if backend else []:
        schema_editor.execute(statement)


def drop(apps, schema_editor):
    backend = BACKENDS.get(schema_editor.connection.vendor)
    for statement in backend.UNDO if backend else []:
        schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("knowledge", "0001_initial")]

    operations = [migrations.RunPython(create, drop)]

"""Sending the knowledge app's Celery task by name once the row that it reads is committed (see
apps/tuning/dispatch.py for why services never import tasks.py)."""

from __future__ import annotations

from celery import current_app
from django.db import transaction

INDEX_KNOWLEDGE_FILE = "apps.knowledge.tasks.index_knowledge_file"


def knowledge_index_enqueue(*, file_id: int) -> None:
    # The default queue: indexing needs no GPU, only the tokenizer.
    transaction.on_commit(lambda: current_app.send_task(INDEX_KNOWLEDGE_FILE, args=(file_id,)))

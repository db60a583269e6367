"""Celery entry point: index one knowledge file (takes its id, calls the service, owns failure handling)."""

import logging

from celery import shared_task

from apps.knowledge import dispatch, services
from apps.knowledge.models import KnowledgeFile

logger = logging.getLogger(__name__)


@shared_task(name=dispatch.INDEX_KNOWLEDGE_FILE)
def index_knowledge_file(file_id: int) -> None:
    try:
        services.knowledge_file_index(file_id=file_id)
    except Exception:
        logger.exception("knowledge file %s: indexing failed", file_id)
        KnowledgeFile.objects.filter(pk=file_id).update(
            status=KnowledgeFile.Status.ERROR, message="Indexing failed on the server. Upload the file again.")

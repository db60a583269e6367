"""Celery entry points of the registry: they take ids, call one service, and own failure handling.

The services send these by name (`merged.BUILD_MERGED_WEIGHTS`) and never import this module.
"""

import logging

from celery import shared_task

from apps.registry import exports, merged
from apps.registry.services import staging_cleanup as _staging_cleanup

logger = logging.getLogger(__name__)


@shared_task(name="apps.registry.tasks.staging_cleanup")
def staging_cleanup() -> int:
    return len(_staging_cleanup())


@shared_task(name=merged.BUILD_MERGED_WEIGHTS)
def merged_weights_build(merged_id: int) -> None:
    """On the default queue. The build records its own failure on the row (and removes its files)."""
    merged.merged_weights_build(merged_id=merged_id)


@shared_task(name=exports.GGUF_EXPORT)
def gguf_export(version_id: int) -> None:
    """On the default queue, right after a registration under the llama.cpp engine. A model llama.cpp cannot serve
    is logged and left to the transformers engine; a failed export is logged, and made again on first use."""
    try:
        exports.version_gguf_export(version_id=version_id)
    except exports.ExportFailed:
        logger.exception("GGUF export of version %s failed", version_id)

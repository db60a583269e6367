"""Celery entry points of the registry: they take ids, call one service, and own failure handling.

The services send these by name (`merged.BUILD_MERGED_WEIGHTS`) and never import this module.
"""

from celery import shared_task

from apps.registry import merged
from apps.registry.services import staging_cleanup as _staging_cleanup


@shared_task(name="apps.registry.tasks.staging_cleanup")
def staging_cleanup() -> int:
    return len(_staging_cleanup())


@shared_task(name=merged.BUILD_MERGED_WEIGHTS)
def merged_weights_build(merged_id: int) -> None:
    """On the default queue. The build records its own failure on the row (and removes its files)."""
    merged.merged_weights_build(merged_id=merged_id)

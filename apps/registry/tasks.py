from celery import shared_task

from apps.registry.services import staging_cleanup as _staging_cleanup


@shared_task(name="apps.registry.tasks.staging_cleanup")
def staging_cleanup() -> int:
    return len(_staging_cleanup())

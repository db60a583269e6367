"""The Celery app: configured from Django settings (CELERY_*), tasks discovered in apps/*/tasks.py."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "store.settings")

app = Celery("store")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _install_worker_steps(celery_app: Celery) -> None:
    # Imported once the Celery app exists: apps.core.workers needs Django's settings, which this module sets up.
    from apps.core.workers import HeartbeatStep

    celery_app.steps["worker"].add(HeartbeatStep)


_install_worker_steps(app)

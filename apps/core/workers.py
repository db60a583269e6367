"""Celery worker boot step that keeps a WorkerHeartbeat row fresh while the worker runs."""

from __future__ import annotations

import logging
import os

from celery import bootsteps

logger = logging.getLogger(__name__)


def heartbeat_write(*, hostname: str, queues: list[str], started_at) -> None:
    # Imports here: the Celery app loads this module while it starts, before Django's apps are ready.
    from django.db import close_old_connections, connection
    from django.utils import timezone

    from apps.core.models import WorkerHeartbeat

    close_old_connections()
    try:
        WorkerHeartbeat.objects.update_or_create(
            hostname=hostname,
            defaults={"queues": queues, "pid": os.getpid(), "started_at": started_at, "last_seen": timezone.now()},
        )
    except Exception:  # a heartbeat must never take the worker down; /healthz will show it stale
        logger.exception("could not write the worker heartbeat")
    finally:
        connection.close()  # this runs in the timer thread: hold no connection between beats


def heartbeat_delete(*, hostname: str) -> None:
    # Imports here: see heartbeat_write.
    from django.db import connection

    from apps.core.models import WorkerHeartbeat

    try:
        WorkerHeartbeat.objects.filter(hostname=hostname).delete()
    except Exception:
        logger.exception("could not remove the worker heartbeat")
    finally:
        connection.close()


class HeartbeatStep(bootsteps.StartStopStep):
    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self.tref = None

    def start(self, worker):
        from django.conf import settings
        from django.utils import timezone

        queues = sorted(worker.app.amqp.queues.consume_from or worker.app.amqp.queues)
        kwargs = {"hostname": worker.hostname, "queues": queues, "started_at": timezone.now()}
        heartbeat_write(**kwargs)
        self.tref = worker.timer.call_repeatedly(
            settings.WORKER_HEARTBEAT_INTERVAL, heartbeat_write, kwargs=kwargs, priority=10
        )

    def stop(self, worker):
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None
        heartbeat_delete(hostname=worker.hostname)

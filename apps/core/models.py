from django.db import models


class TimeStampedModel(models.Model):
    """Base of the project's rows: when each was created and last changed."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class WorkerHeartbeat(models.Model):
    """A running Celery worker, refreshed every WORKER_HEARTBEAT_INTERVAL seconds by HeartbeatStep.

    /healthz reads these rows rather than pinging over the broker: the filesystem transport has no fast
    broadcast, and a row tells which queues are being consumed right now.
    """

    hostname = models.CharField(max_length=255, unique=True)
    queues = models.JSONField(default=list)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    last_seen = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["hostname"]

    def __str__(self) -> str:
        return f"{self.hostname} ({', '.join(self.queues)})"

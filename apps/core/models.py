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


class Generation(models.Model):
    """A counter that a kind of data bumps in the transaction that changes it (apps/core/generations.py).

    A cache keyed by the counter's value is never stale: a reader reads the counter before the data, and a writer
    bumps it in the same transaction as its change, so data cached under a value is at least as new as that value.
    """

    name = models.CharField(max_length=64, primary_key=True)
    value = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name}={self.value}"

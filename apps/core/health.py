"""Health checks behind /healthz: database, broker, registry and workers, each ok or an error with detail."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str

    def as_dict(self) -> dict:
        return {"status": "ok" if self.ok else "error", "detail": self.detail}


def check_database() -> CheckResult:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return CheckResult(True, connection.vendor)


def check_broker() -> CheckResult:
    from store.celery import app

    with app.connection_for_write() as conn:
        # One quick try: a health check must answer fast, not wait out kombu's retry schedule.
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)
        return CheckResult(True, conn.as_uri())  # as_uri() masks any password


def check_registry() -> CheckResult:
    from apps.registry.selectors import registry_problems

    problems = registry_problems()
    if problems:
        return CheckResult(False, "; ".join(problems))
    return CheckResult(True, str(settings.MODELS_REGISTRY_ROOT))


def check_worker() -> CheckResult:
    from apps.core.models import WorkerHeartbeat

    fresh_since = timezone.now() - timedelta(seconds=settings.WORKER_HEARTBEAT_STALE_AFTER)
    served: dict[str, list[str]] = {}
    for beat in WorkerHeartbeat.objects.filter(last_seen__gte=fresh_since):
        for queue in beat.queues:
            served.setdefault(queue, []).append(beat.hostname)
    wanted = [settings.CELERY_TASK_DEFAULT_QUEUE, settings.GPU_QUEUE]
    missing = [q for q in wanted if q not in served]
    if missing:
        return CheckResult(False, f"no live worker consumes the queue(s): {', '.join(missing)}")
    return CheckResult(True, "; ".join(f"{q}: {', '.join(sorted(served[q]))}" for q in wanted))


CHECKS: dict[str, Callable[[], CheckResult]] = {
    "database": check_database,
    "broker": check_broker,
    "registry": check_registry,
    "worker": check_worker,
}


def health_report() -> tuple[bool, dict]:
    """Run every check; one that raises counts as failed with the exception's text."""
    checks = {}
    for name, check in CHECKS.items():
        try:
            result = check()
        except Exception as exc:  # noqa: BLE001 - a health check reports every failure, whatever it is
            result = CheckResult(False, f"{type(exc).__name__}: {exc}")
        checks[name] = result.as_dict()
    healthy = all(c["status"] == "ok" for c in checks.values())
    return healthy, {"status": "ok" if healthy else "degraded", "checks": checks}

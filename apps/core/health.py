"""Health checks behind /healthz, each ok or an error with detail.

Core runs the checks and owns those of the shared services (database, broker, workers); each app registers its
own from its AppConfig.ready() with `health_check_register` (the registry: its root and its version folders),
so core imports no domain app. Import this module only once the app registry is ready (it reads core's models).

A check's detail may name paths, hostnames, broker addresses and private models: /healthz shows it to staff
only; everyone else gets each check's status alone (`health_report(with_details=False)`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from apps.core.models import WorkerHeartbeat
from store.celery import app as celery_app


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str

    def as_dict(self, *, with_details: bool = True) -> dict:
        status = {"status": "ok" if self.ok else "error"}
        return {**status, "detail": self.detail} if with_details else status


def check_database() -> CheckResult:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return CheckResult(True, connection.vendor)


def check_broker() -> CheckResult:
    with celery_app.connection_for_write() as conn:
        # One quick try: a health check must answer fast, not wait out kombu's retry schedule.
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)
        return CheckResult(True, conn.as_uri())  # as_uri() masks any password


def check_worker() -> CheckResult:
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


HealthCheck = Callable[[], CheckResult]
CHECKS: dict[str, HealthCheck] = {}


def health_check_register(name: str, check: HealthCheck) -> None:
    """Add (or replace) the check reported under `name`; the report lists checks in the order they came."""
    CHECKS[name] = check


health_check_register("database", check_database)
health_check_register("broker", check_broker)
health_check_register("worker", check_worker)


def health_report(*, with_details: bool = True) -> tuple[bool, dict]:
    """Run every check; one that raises counts as failed with the exception's text.

    `with_details=False`: each check's status alone, with no detail (nothing private: see the docstring above).
    """
    checks = {}
    for name, check in CHECKS.items():
        try:
            result = check()
        except Exception as exc:  # noqa: BLE001 - a health check reports every failure, whatever it is
            result = CheckResult(False, f"{type(exc).__name__}: {exc}")
        checks[name] = result.as_dict(with_details=with_details)
    healthy = all(c["status"] == "ok" for c in checks.values())
    return healthy, {"status": "ok" if healthy else "degraded", "checks": checks}

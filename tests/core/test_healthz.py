import time
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.core.models import WorkerHeartbeat
from tests.live import celery_worker, wait_for


def fresh_heartbeats():
    now = timezone.now()
    for queue in ["celery", "gpu"]:
        WorkerHeartbeat.objects.create(hostname=f"{queue}@test", queues=[queue], pid=1, started_at=now, last_seen=now)


@pytest.mark.django_db
def test_healthz_ok_when_everything_is_up(client, tiny_version):
    fresh_heartbeats()
    response = client.get("/healthz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "broker", "registry", "worker"}
    assert all(c["status"] == "ok" for c in body["checks"].values())
    assert response["Cache-Control"].startswith("max-age=0")


@pytest.mark.django_db
def test_apps_register_their_own_checks(client, tiny_version, monkeypatch):
    from apps.core import health

    fresh_heartbeats()
    monkeypatch.setattr(health, "CHECKS", dict(health.CHECKS))
    health.health_check_register("extra", lambda: health.CheckResult(False, "down for a test"))
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["extra"] == {"status": "error", "detail": "down for a test"}
    assert response.json()["checks"]["registry"]["status"] == "ok"  # registered by the registry app


def test_core_health_imports_no_domain_app():
    import ast
    from pathlib import Path

    from apps.core import health

    for node in ast.walk(ast.parse(Path(health.__file__).read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("apps."):
            assert node.module.startswith("apps.core"), node.module


@pytest.mark.django_db
def test_healthz_needs_no_login(client, tiny_version, django_user_model):
    fresh_heartbeats()
    assert client.get("/healthz").status_code == 200


@pytest.mark.django_db
def test_healthz_degraded_without_base_model(client):
    fresh_heartbeats()
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["registry"]["status"] == "error"
    assert "import_base_model" in body["checks"]["registry"]["detail"]
    assert body["checks"]["database"]["status"] == "ok"


@pytest.mark.django_db
def test_healthz_degraded_when_registry_root_is_gone(client, tiny_version, settings, tmp_path):
    fresh_heartbeats()
    settings.MODELS_REGISTRY_ROOT = tmp_path / "unmounted-volume"
    response = client.get("/healthz")
    assert response.status_code == 503
    assert "does not exist" in response.json()["checks"]["registry"]["detail"]


@pytest.mark.django_db
def test_healthz_degraded_when_a_version_folder_is_missing(client, tiny_version, registry_root):
    import shutil

    fresh_heartbeats()
    shutil.rmtree(tiny_version.path)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert "smollm2-135m-instruct@v1" in response.json()["checks"]["registry"]["detail"]


@pytest.mark.django_db
def test_healthz_degraded_when_broker_is_down(client, tiny_version, monkeypatch):
    from store.celery import app

    fresh_heartbeats()
    # Nothing listens on port 1: the broker is down.
    monkeypatch.setitem(app.conf, "broker_url", "redis://127.0.0.1:1/0")
    monkeypatch.setitem(app.conf, "broker_write_url", "redis://127.0.0.1:1/0")
    monkeypatch.setitem(app.conf, "broker_transport_options", {})
    started = time.monotonic()
    response = client.get("/healthz")
    assert time.monotonic() - started < 10  # a health check answers quickly even with the broker gone
    assert response.status_code == 503
    broker = response.json()["checks"]["broker"]
    assert broker["status"] == "error" and "Error" in broker["detail"]


@pytest.mark.django_db
def test_healthz_degraded_without_a_live_worker(client, tiny_version):
    old = timezone.now() - timedelta(minutes=10)
    WorkerHeartbeat.objects.create(hostname="gone@test", queues=["celery", "gpu"], pid=1, started_at=old, last_seen=old)
    WorkerHeartbeat.objects.create(
        hostname="cpu@test", queues=["celery"], pid=1, started_at=timezone.now(), last_seen=timezone.now()
    )
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["worker"]["detail"] == "no live worker consumes the queue(s): gpu"


@pytest.mark.django_db(transaction=True)
def test_real_worker_heartbeats_and_runs_a_task(client, tiny_version, registry_root, tmp_path):
    """A real Celery worker process on the configured broker: /healthz turns ok, and a task runs through it."""
    import os

    from apps.registry.tasks import staging_cleanup

    with celery_worker(log_path=tmp_path / "worker.log"):
        response = client.get("/healthz")
        assert response.status_code == 200, response.json()
        assert "test-" in response.json()["checks"]["worker"]["detail"]

        stale = registry_root / "demo" / ".staging-dead"
        stale.mkdir(parents=True)
        os.utime(stale, (0, 0))
        staging_cleanup.delay()
        wait_for(lambda: not stale.exists(), timeout=30, what="the worker to run staging_cleanup")
    # The worker removes its heartbeat when it stops.
    wait_for(lambda: not WorkerHeartbeat.objects.filter(hostname__startswith="test-").exists(), timeout=10,
             what="the heartbeat to go")

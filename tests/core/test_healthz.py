import shutil
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


@pytest.fixture
def staff_client(client, django_user_model):
    """/healthz shows what each check found to staff only."""
    client.force_login(django_user_model.objects.create_user("ops", password="x", is_staff=True))
    return client


@pytest.mark.django_db
def test_healthz_ok_when_everything_is_up(client, tiny_version):
    fresh_heartbeats()
    response = client.get("/healthz")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "broker", "registry", "worker", "inference"}
    # Anonymous: each check's status alone, no detail.
    assert all(c == {"status": "ok"} for c in body["checks"].values()), body
    assert response["Cache-Control"].startswith("max-age=0")


@pytest.mark.django_db
def test_apps_register_their_own_checks(staff_client, tiny_version, monkeypatch):
    from apps.core import health

    fresh_heartbeats()
    monkeypatch.setattr(health, "CHECKS", dict(health.CHECKS))
    health.health_check_register("extra", lambda: health.CheckResult(False, "down for a test"))
    response = staff_client.get("/healthz")
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
def test_healthz_degraded_without_base_model(staff_client):
    fresh_heartbeats()
    response = staff_client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["registry"]["status"] == "error"
    assert "import_base_model" in body["checks"]["registry"]["detail"]
    assert body["checks"]["database"]["status"] == "ok"


@pytest.mark.django_db
def test_healthz_degraded_when_registry_root_is_gone(staff_client, tiny_version, settings, tmp_path):
    fresh_heartbeats()
    settings.MODELS_REGISTRY_ROOT = tmp_path / "unmounted-volume"
    response = staff_client.get("/healthz")
    assert response.status_code == 503
    assert "does not exist" in response.json()["checks"]["registry"]["detail"]


@pytest.mark.django_db
def test_healthz_degraded_when_a_version_folder_is_missing(staff_client, tiny_version, registry_root):
    fresh_heartbeats()
    shutil.rmtree(tiny_version.path)
    response = staff_client.get("/healthz")
    assert response.status_code == 503
    assert "smollm2-135m-instruct@v1" in response.json()["checks"]["registry"]["detail"]


@pytest.mark.django_db
def test_healthz_degraded_when_broker_is_down(staff_client, tiny_version, monkeypatch):
    from store.celery import app

    fresh_heartbeats()
    # Nothing listens on port 1: the broker is down.
    monkeypatch.setitem(app.conf, "broker_url", "redis://127.0.0.1:1/0")
    monkeypatch.setitem(app.conf, "broker_write_url", "redis://127.0.0.1:1/0")
    monkeypatch.setitem(app.conf, "broker_transport_options", {})
    started = time.monotonic()
    response = staff_client.get("/healthz")
    assert time.monotonic() - started < 10  # a health check answers quickly even with the broker gone
    assert response.status_code == 503
    broker = response.json()["checks"]["broker"]
    assert broker["status"] == "error" and "Error" in broker["detail"]


@pytest.mark.django_db
def test_healthz_degraded_without_a_live_worker(staff_client, tiny_version):
    old = timezone.now() - timedelta(minutes=10)
    WorkerHeartbeat.objects.create(hostname="gone@test", queues=["celery", "gpu"], pid=1, started_at=old, last_seen=old)
    WorkerHeartbeat.objects.create(
        hostname="cpu@test", queues=["celery"], pid=1, started_at=timezone.now(), last_seen=timezone.now()
    )
    response = staff_client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["worker"]["detail"] == "no live worker consumes the queue(s): gpu"


@pytest.mark.django_db(transaction=True)
def test_real_worker_heartbeats_and_runs_a_task(staff_client, tiny_version, registry_root, tmp_path):
    """A real Celery worker process on the configured broker: /healthz turns ok, and a task runs through it."""
    import os

    from apps.registry.tasks import staging_cleanup

    with celery_worker(log_path=tmp_path / "worker.log"):
        response = staff_client.get("/healthz")
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


PRIVATE_FINE_TUNE = "ft:smollm2-135m-instruct:alice:secret-project:ftjob-hidden"


@pytest.fixture
def everything_failing_with_private_details(tiny_version, tiny_hf_dir, settings, tmp_path, monkeypatch, user):
    """Every check fails with details that name private things: a registry root path that does not exist, a
    private fine-tune whose folder is gone, a broker URL with a password, a worker's hostname."""
    from apps.inference import services
    from apps.registry.services import model_version_register
    from store.celery import app

    version = model_version_register(name=PRIVATE_FINE_TUNE, source_dir=tiny_hf_dir, owner=user)
    shutil.rmtree(version.path)
    now = timezone.now()
    WorkerHeartbeat.objects.create(hostname="celery@db-internal-7.corp.example", queues=["celery"], pid=4242,
                                   started_at=now, last_seen=now)
    broker = "redis://store:hunter2-broker-password@10.20.30.40:1/0"  # nothing listens on port 1
    services.engine_reset()  # a fresh engine, as in a new process: it must load the base model, whose folder is gone
    monkeypatch.setitem(app.conf, "broker_url", broker)
    monkeypatch.setitem(app.conf, "broker_write_url", broker)
    monkeypatch.setitem(app.conf, "broker_transport_options", {})
    return ["unmounted-volume", str(tmp_path), "secret-project", "ftjob-hidden", "alice", "db-internal-7", "corp.example",
            "hunter2", "10.20.30.40", "redis://", "sqlite", "import_base_model", "/"]


@pytest.mark.django_db
def test_healthz_names_nothing_private_to_anonymous_or_non_staff_callers(
    client, everything_failing_with_private_details, settings, tmp_path, other_user
):
    """The attack: read /healthz while things are broken, to learn paths, hosts, credentials, private models."""
    settings.MODELS_REGISTRY_ROOT = tmp_path / "unmounted-volume"
    for caller in [None, other_user]:  # anonymous, then a signed-in user who is not staff
        if caller is not None:
            client.force_login(caller)
        response = client.get("/healthz")
        assert response.status_code == 503
        body = response.json()
        assert body == {"status": "degraded", "checks": {
            "database": {"status": "ok"},
            "broker": {"status": "error"},
            "registry": {"status": "error"},
            "worker": {"status": "error"},
            "inference": {"status": "error"},  # the base model's folder is gone: it cannot load
        }}
        text = response.content.decode()
        leaked = [s for s in everything_failing_with_private_details if s in text]
        assert leaked == [], f"/healthz shows {leaked} to {caller or 'anonymous'}: {text}"


@pytest.mark.django_db
def test_staff_see_what_each_check_found(staff_client, everything_failing_with_private_details, registry_root):
    body = staff_client.get("/healthz").json()
    assert PRIVATE_FINE_TUNE in body["checks"]["registry"]["detail"]
    assert body["checks"]["worker"]["detail"] == "no live worker consumes the queue(s): gpu"
    assert body["checks"]["broker"]["status"] == "error" and body["checks"]["broker"]["detail"]
    assert body["checks"]["database"]["detail"]


@pytest.mark.django_db(transaction=True)
def test_sixteen_concurrent_health_reports_all_say_ok(tiny_version, registry_root):
    """Several web processes and a load balancer probe at once: each probe writes a file of its own."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connections

    from apps.core.health import health_report

    fresh_heartbeats()
    start = threading.Barrier(16)

    def probe(_):
        try:
            start.wait()
            return health_report()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(16) as pool:
        reports = list(pool.map(probe, range(16)))
    failed = [report for healthy, report in reports if not healthy]
    assert failed == []
    assert [p.name for p in registry_root.iterdir() if p.name.startswith(".healthz")] == []  # no probe file left


@pytest.fixture
def remote_inference(settings):
    """Point the process's engine at a model server (as web runs): `use(base_url, api_key)`."""
    from apps.inference import services

    def use(base_url: str, api_key: str = ""):
        settings.INFERENCE_BACKEND = "remote"
        settings.INFERENCE_REMOTE_BASE_URL = base_url
        settings.INFERENCE_REMOTE_API_KEY = api_key
        services.engine_reset()

    yield use
    services.engine_reset()


@pytest.mark.django_db
def test_healthz_inference_error_when_the_model_server_is_down(client, staff_client, tiny_version, remote_inference):
    from tests.live import free_port

    fresh_heartbeats()
    port = free_port()  # nothing listens there
    remote_inference(f"http://127.0.0.1:{port}/v1", "token")
    started = time.monotonic()
    response = staff_client.get("/healthz")
    assert time.monotonic() - started < 10
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["inference"]["status"] == "error"
    assert body["checks"]["inference"]["detail"] == f"http://127.0.0.1:{port}: The model server cannot be reached: try again later."
    assert {name for name, c in body["checks"].items() if c["status"] != "ok"} == {"inference"}

    client.logout()
    anonymous = client.get("/healthz")
    assert anonymous.status_code == 503
    assert anonymous.json()["checks"]["inference"] == {"status": "error"}
    assert str(port) not in anonymous.content.decode() and "127.0.0.1" not in anonymous.content.decode()


@pytest.mark.django_db
def test_healthz_inference_ok_with_a_real_model_server(client, staff_client, tiny_version, remote_inference, tmp_path):
    """Web on the remote engine (as `make run` runs it): the model server answers and loads the base model."""
    from tests.live import model_server

    fresh_heartbeats()
    with model_server(log_path=tmp_path / "inference.log") as (base_url, token):
        remote_inference(base_url, token)
        response = staff_client.get("/healthz")
        assert response.status_code == 200, response.json()
        root = base_url.removesuffix("/v1")
        assert response.json()["checks"]["inference"] == {
            "status": "ok", "detail": f"{root}: smollm2-135m-instruct@v1 answers and loads"
        }
        assert "GET /health model=smollm2-135m-instruct@v1 status=200" in (tmp_path / "inference.log").read_text()

        # A web process with the wrong token: refused, and staff are told what to check.
        remote_inference(base_url, "a-wrong-token")
        inference = staff_client.get("/healthz").json()["checks"]["inference"]
        assert inference["status"] == "error" and "INFERENCE_REMOTE_API_KEY" in inference["detail"], inference

        # The server is up but cannot load the base model (its folder is gone): inference is an error.
        remote_inference(base_url, token)
        shutil.rmtree(tiny_version.path)
        response = staff_client.get("/healthz")
        assert response.status_code == 503
        inference = response.json()["checks"]["inference"]
        assert inference["status"] == "error" and "404" in inference["detail"], inference
        client.logout()
        anonymous = client.get("/healthz")
        assert anonymous.status_code == 503
        assert anonymous.json()["checks"]["inference"] == {"status": "error"}
        assert root not in anonymous.content.decode()

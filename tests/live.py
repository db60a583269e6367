"""Real processes for tests: a Celery worker (and later a web server) on the test database and broker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def child_database_url() -> str:
    """The URL of the database the tests run on (pytest-django's test database), for child processes."""
    s = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{s['NAME']}"
    auth = s["USER"] + (f":{s['PASSWORD']}" if s.get("PASSWORD") else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def live_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="store.settings_test",
        DATABASE_URL=child_database_url(),
        MODELS_REGISTRY_ROOT=str(settings.MODELS_REGISTRY_ROOT),
        MEDIA_ROOT=str(settings.MEDIA_ROOT),
        FINETUNE_WORK_ROOT=str(settings.FINETUNE_WORK_ROOT),
        WORKER_HEARTBEAT_INTERVAL="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def wait_for(predicate, *, timeout: float, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


@contextmanager
def celery_worker(*, queues: str = "celery,gpu", log_path: Path | None = None, **env):
    """A real `celery worker` process; yields once its heartbeat row is in the database."""
    from apps.core.models import WorkerHeartbeat

    name = f"test-{uuid.uuid4().hex[:8]}@%h"
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "store", "worker", "-Q", queues, "-c", "1", "-n", name,
         "--without-gossip", "--without-mingle", "--loglevel", "INFO"],
        cwd=ROOT,
        env=live_env(**env),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(
            lambda: proc.poll() is not None or WorkerHeartbeat.objects.filter(hostname__startswith=name[:13]).exists(),
            timeout=60,
            what="the worker's heartbeat",
        )
        if proc.poll() is not None:
            raise RuntimeError(f"celery worker exited with {proc.returncode}; log: {log_path}")
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if log_path:
            log.close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def store_server(*, log_path: Path | None = None, **env):
    """A second store process (uvicorn, ASGI) on the test database; yields its base URL once it answers."""
    import urllib.error
    import urllib.request

    port = free_port()
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "store.asgi:application", "--host", "127.0.0.1", "--port", str(port),
         "--lifespan", "off", "--no-access-log"],
        cwd=ROOT,
        env=live_env(**env),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def answers():
        if proc.poll() is not None:
            raise RuntimeError(f"the store process exited with {proc.returncode}; log: {log_path}")
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=2)
        except urllib.error.HTTPError:
            return True  # it answered (503 is fine here: no worker runs)
        except OSError:
            return False
        return True

    try:
        wait_for(answers, timeout=60, what="the store process to answer")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log_path:
            log.close()

"""Real processes for tests: a Celery worker, a store (web) process and a model server, on the test database,
broker and registry."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
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
def store_server(*, log_path: Path | None = None, inference: bool = True, **env):
    """A second store process (uvicorn, ASGI) on the test database; yields its base URL once it answers.

    As `make run` runs it: web on the remote engine, generating through a real model server (`model_server`, on
    this test's registry, its log beside `log_path`) that starts first and stops last. `inference=False`, or
    `INFERENCE_BACKEND="local"` in `env`, starts none (a test that needs no generation, or the engine in web).
    `env` reaches both processes (the model server reads the INFERENCE_* and TORCH_* it knows)."""
    if not inference or env.get("INFERENCE_BACKEND") == "local":
        with _store_process(log_path=log_path, **env) as url:
            yield url
        return
    server_log = log_path.with_name(f"{log_path.stem}.inference{log_path.suffix}") if log_path else None
    with model_server(log_path=server_log, **env) as (base_url, token):
        remote = {"INFERENCE_BACKEND": "remote", "INFERENCE_REMOTE_BASE_URL": base_url, "INFERENCE_REMOTE_API_KEY": token}
        with _store_process(log_path=log_path, **{**env, **remote}) as url:
            yield url


@contextmanager
def _served_process(command: list[str], *, env: dict, url: str, probe: str, what: str, log_path: Path | None):
    """A server process of the store on the test's settings; yields once `url + probe` answers (any HTTP status:
    a 503 /healthz is an answer), and ends it (SIGTERM, SIGKILL after 20 s) afterwards."""
    import urllib.error
    import urllib.request

    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(command, cwd=ROOT, env=live_env(**env), stdout=log, stderr=subprocess.STDOUT)

    def answers():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}; log: {log_path}")
        try:
            urllib.request.urlopen(url + probe, timeout=2)
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False
        return True

    try:
        wait_for(answers, timeout=60, what=f"{what} to answer")
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log_path:
            log.close()


@contextmanager
def _store_process(*, log_path: Path | None = None, **env):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "uvicorn", "store.asgi:application", "--host", "127.0.0.1", "--port", str(port),
               "--lifespan", "off", "--no-access-log"]
    # /healthz may be 503 here (no worker runs): that it answers is enough.
    with _served_process(command, env=env, url=url, probe="/healthz", what="the store process", log_path=log_path):
        yield url


@contextmanager
def model_server(*, log_path: Path | None = None, **env):
    """A real model server (`python -m apps.inference.server`) on a free port, serving this test's registry root with
    the tiny model's settings (float32, no int8); yields its OpenAI base URL `http://127.0.0.1:<port>/v1` and its
    token once `/health` answers."""
    import secrets

    port = free_port()
    token = env.pop("INFERENCE_REMOTE_API_KEY", None) or f"test-{secrets.token_urlsafe(16)}"
    server_env = {"INFERENCE_DTYPE": "float32", "INFERENCE_QUANTIZE": "none", **env,
                  "INFERENCE_HOST": "127.0.0.1", "INFERENCE_PORT": str(port), "INFERENCE_REMOTE_API_KEY": token}
    root = f"http://127.0.0.1:{port}"
    with _served_process([sys.executable, "-m", "apps.inference.server"], env=server_env, url=root, probe="/health",
                         what="the model server", log_path=log_path):
        yield f"{root}/v1", token


@dataclass
class StoreStack:
    proc: subprocess.Popen  # the supervisor
    url: str  # the web tier
    inference_url: str  # the model server (without /v1)
    log_path: Path


@contextmanager
def store_stack(*, log_path: Path, **env):
    """The whole store as `make run` starts it: the real Procfile under `python -m store.supervisor` (WEB_PROCESSES
    web processes on one socket, the model server, both workers, beat) on the test database and registry, on free
    ports; yields a StoreStack once /healthz answers 200. The supervisor leads a process group of its own, killed
    whole at the end (whatever a test left)."""
    import signal
    import urllib.request

    web_port, inference_port = free_port(), free_port()
    child_env = live_env(
        VENV_BIN=str(Path(sys.executable).parent), WEB_PORT=str(web_port), WEB_PROCESSES="2",
        INFERENCE_BACKEND="remote", INFERENCE_HOST="127.0.0.1", INFERENCE_PORT=str(inference_port),
        INFERENCE_REMOTE_BASE_URL=f"http://127.0.0.1:{inference_port}/v1",
        INFERENCE_DTYPE="float32", INFERENCE_QUANTIZE="none", **env,
    )
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "store.supervisor", str(ROOT / "Procfile")], cwd=ROOT, env=child_env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    stack = StoreStack(proc, f"http://127.0.0.1:{web_port}", f"http://127.0.0.1:{inference_port}", log_path)

    def healthy():
        if proc.poll() is not None:
            raise RuntimeError(f"the supervisor exited with {proc.returncode}; log: {log_path}")
        try:
            return urllib.request.urlopen(f"{stack.url}/healthz", timeout=5).status == 200
        except OSError:  # HTTPError (503) included
            return False

    try:
        wait_for(healthy, timeout=120, what=f"/healthz to answer 200 (log: {log_path})")
        yield stack
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

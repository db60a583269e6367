"""A webhook receiver started by the test (http.server on 127.0.0.1 in a thread), and settings that let webhooks
reach it: loopback allowed through WEBHOOK_ALLOWED_NETWORKS, http allowed (tests run with DEBUG off)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

LOOPBACK_ONLY = ["127.0.0.0/8"]


@dataclass
class Received:
    path: str
    headers: dict
    body: bytes


@dataclass
class Receiver:
    url: str
    port: int
    received: list[Received] = field(default_factory=list)
    status: int = 200
    headers: dict = field(default_factory=dict)  # extra answer headers (a redirect's Location)
    answer: bytes = b"ok"
    delay: float = 0.0  # seconds before answering

    def wait(self, count: int = 1, timeout: float = 60.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.received) >= count, f"the receiver got {len(self.received)} of {count} requests"
        return self.received


@pytest.fixture
def receiver():
    state: dict = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            rec: Receiver = state["receiver"]
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            rec.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            if rec.delay:
                time.sleep(rec.delay)
            try:
                self.send_response(rec.status)
                for name, value in rec.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(rec.answer)))
                self.end_headers()
                self.wfile.write(rec.answer)
            except OSError:
                pass  # the caller hung up (a timeout test)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    state["receiver"] = Receiver(url=f"http://127.0.0.1:{port}/hooks/store", port=port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state["receiver"]
    server.shutdown()
    server.server_close()


@pytest.fixture
def hooks_allowed(settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = LOOPBACK_ONLY
    settings.WEBHOOK_ALLOW_HTTP = True
    settings.WEBHOOK_TIMEOUT_SECONDS = 5
    return settings


def standard_webhooks_verify(secret: str, headers: dict, body: bytes) -> bool:
    """The Standard Webhooks check, written from the spec apart from the store's signer: the key is the base64 after
    `whsec_`; the signed content `{webhook-id}.{webhook-timestamp}.{body}`; any `v1,<base64>` of the header may match."""
    key = base64.b64decode(secret.split("_", 1)[1])
    content = headers["webhook-id"].encode() + b"." + headers["webhook-timestamp"].encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    offered = [s.split(",", 1)[1] for s in headers["webhook-signature"].split(" ") if s.startswith("v1,")]
    return any(hmac.compare_digest(expected, s) for s in offered)


def running_job(user):
    """A job of `user` that is training (its rows as the runner leaves them): what the worker's end of a job finishes."""
    from apps.tuning.models import FineTuningJob, TrainingFile

    f = TrainingFile.objects.create(owner=user, filename="a.jsonl", file="training_files/a.jsonl", status="processed",
                                    format="chat", example_count=24, token_count=600)
    return FineTuningJob.objects.create(owner=user, base_reference="smollm2-135m-instruct", training_file=f,
                                        status="running", total_steps=6, step=6)


def job_finish(job, status: str):
    """The job's end as the runner makes it (apps.tuning.services.runner): the row locked, then finished."""
    from django.db import transaction

    from apps.tuning.models import FineTuningJob
    from apps.tuning.services.jobs import finetune_job_finish

    with transaction.atomic():
        job = FineTuningJob.objects.select_for_update().get(pk=job.pk)
        finetune_job_finish(job=job, status=status, message=f"Job {status}.")
    return job

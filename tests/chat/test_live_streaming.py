"""Streaming through a real uvicorn process: every face streams on the event loop, eight streams at once hold no
thread each, and a client that hangs up mid-answer gets its partial run recorded."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from urllib.parse import urlsplit

import psutil
import pytest
from django.conf import settings

from apps.accounts.services import api_key_create
from apps.chat.models import AppRun, StreamSlot
from apps.registry.services import model_version_register
from tests.factories import UserFactory
from tests.live import store_server, wait_for

CSRF = "k" * 32
STREAMS = 8


def post(url: str, path: str, body: dict, *, key: str | None = None) -> http.client.HTTPResponse:
    """POST and return the response with its body unread (it streams)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    headers = {"Content-Type": "application/json", "Cookie": f"csrftoken={CSRF}", "X-CSRFToken": CSRF}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    connection.request("POST", path, body=json.dumps(body), headers=headers)
    response = connection.getresponse()
    response.connection = connection  # to hang up
    return response


def events(response) -> list:
    text = response.read().decode()
    return [line[6:] if line == "data: [DONE]" else json.loads(line[6:]) for line in text.split("\n\n") if line.startswith("data: ")]


def story(max_tokens: int) -> dict:
    return {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Tell me a story."}],
            "max_tokens": max_tokens, "temperature": 0, "stream": True, "ignore_eos": True}


def server_process(url: str) -> psutil.Process:
    port = str(urlsplit(url).port)
    return next(p for p in psutil.Process().children() if port in p.cmdline())


def eight_streams(url: str, key: str, *, server: psutil.Process | None = None) -> int:
    """Run STREAMS long /v1 streams at once; the most threads `server` had while all of them were streaming."""
    started, release, counts = threading.Barrier(STREAMS + 1), threading.Event(), [0]
    answers = [None] * STREAMS

    def stream(i):
        response = post(url, "/v1/chat/completions", story(300), key=key)
        response.readline()  # the first chunk is here: the stream runs
        started.wait(timeout=120)
        release.wait(timeout=120)
        answers[i] = events(response)

    readers = [threading.Thread(target=stream, args=(i,)) for i in range(STREAMS)]
    for reader in readers:
        reader.start()
    started.wait(timeout=120)
    for _ in range(10 if server else 0):
        counts.append(server.num_threads())
        time.sleep(0.05)
    release.set()
    for reader in readers:
        reader.join(timeout=120)
    assert all(a and a[-1] == "[DONE]" for a in answers)
    return max(counts)


@pytest.mark.django_db(transaction=True)
def test_streams_through_uvicorn(tiny_hf_dir, tmp_path):
    from apps.catalog.services import store_seed

    model_version_register(name=settings.BASE_MODEL_ID, source_dir=tiny_hf_dir)
    store_seed()
    key = api_key_create(user=UserFactory(), name="live")[1]
    with store_server(log_path=tmp_path / "store.log", INFERENCE_DTYPE="float32", RUN_MAX_CONCURRENT_STREAMS="16") as url:
        # Each face streams (the page as the browser sends it: anonymous, with its CSRF token).
        page = post(url, "/apps/translator/run", {"text": "Good morning.", "source": "English", "target": "German"})
        assert page.status == 200, page.read()[:300]
        assert events(page)[-1]["done"] is True
        native = post(url, "/api/v1/apps/chatbot/runs/", {"message": "Hi", "stream": True}, key=key)
        assert native.status == 200 and events(native)[-1]["conversation"]
        v1 = post(url, "/v1/chat/completions", story(8), key=key)
        assert v1.status == 200 and events(v1)[-1] == "[DONE]"

        # Eight streams at once, twice (the first round starts the threads a process keeps: the engine's, the
        # event loop's default pool). While the second runs, the server's threads do not grow by one per stream
        # beyond what Django's ASGI handler holds for any request in flight: one idle thread for its sync middleware
        # and view, where the stream's database steps also go (the old way added a thread per stream on top).
        server = server_process(url)
        eight_streams(url, key)
        idle = server.num_threads()
        busy = eight_streams(url, key, server=server)
        print(f"server threads: idle {idle}, with {STREAMS} streams {busy}")
        assert busy - idle <= STREAMS + 2, (idle, busy)

        # A client that hangs up mid-answer: what it was sent is recorded (cancelled) and billed, its slot freed.
        before = AppRun.objects.count()
        leaving = post(url, "/v1/chat/completions", story(400), key=key)
        for _ in range(5):
            leaving.readline()
        leaving.connection.sock.shutdown(socket.SHUT_RDWR)
        leaving.connection.close()
        run = wait_for(lambda: AppRun.objects.filter(finish_reason="cancelled").first(), timeout=30, what="the cancelled run")
        assert AppRun.objects.count() == before + 1 and 1 <= run.completion_tokens < 400
        wait_for(lambda: not StreamSlot.objects.exists(), timeout=10, what="the slot to be freed")

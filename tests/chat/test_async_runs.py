"""Runs streamed under ASGI: opened on the server's event loop (`engine.astream`), read there (`arun_events`), no
thread waiting on a stream; a client that leaves is recorded and its generation stops; a busy engine is a 503.

These tests call the store's real ASGI application in this process, as uvicorn calls it (the body, then a
disconnect when the client goes), with the real tiny engine. tests/chat/test_live_streaming.py does the same
through a real uvicorn process.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from asgiref.sync import sync_to_async

from apps.accounts.models import RateWindow
from apps.accounts.services import api_key_create
from apps.chat import services as run_services
from apps.chat.models import AppRun, StreamSlot
from apps.inference import services as inference
from apps.inference.local import LocalEngine
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)  # the ASGI handler's threads use connections of their own

CSRF = "k" * 32  # a CSRF cookie and the same token in the header: what the page's script sends
TRANSLATE = {"text": "Good morning, my friend.", "source": "English", "target": "German"}


@dataclass
class Answer:
    status: int = 0
    headers: dict = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)

    @property
    def events(self) -> list:
        text = b"".join(self.chunks).decode()
        return [line[6:] if line[6:] == "[DONE]" else json.loads(line[6:])
                for line in text.split("\n\n") if line.startswith("data: ")]

    def json(self) -> dict:
        return json.loads(b"".join(self.chunks))


async def asgi_post(path: str, body: dict, *, key: str | None = None, leave_after: int | None = None,
                    leave_in: float | None = None, leave_on: asyncio.Event | None = None) -> Answer:
    """POST through the store's ASGI application; the client disconnects (uvicorn then sends `http.disconnect`)
    once it has `leave_after` pieces of the body, `leave_in` seconds after sending its request, or when `leave_on`
    is set."""
    from store.asgi import application

    raw = json.dumps(body).encode()
    headers = [(b"host", b"testserver"), (b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()),
               (b"cookie", f"csrftoken={CSRF}".encode()), (b"x-csrftoken", CSRF.encode())]
    if key:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
             "client": ("203.0.113.20", 50000), "server": ("testserver", 80)}
    gone = asyncio.Event()
    if leave_in is not None:
        asyncio.get_running_loop().call_later(leave_in, gone.set)
    if leave_on is not None:
        asyncio.ensure_future(leave_on.wait()).add_done_callback(lambda _: gone.set())
    answer, body_sent = Answer(), False

    async def receive():
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            answer.status = message["status"]
            answer.headers = {k.decode().lower(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body" and message.get("body"):
            if gone.is_set():
                return  # the client has left: as under uvicorn, what the app still sends goes nowhere
            answer.chunks.append(message["body"])
            if leave_after is not None and len(answer.chunks) >= leave_after:
                gone.set()

    await asyncio.wait_for(application(scope, receive, send), timeout=120)
    return answer


@pytest.fixture
def engine_calls(store, monkeypatch):
    """Which of the real engine's calls the run service makes: `stream` (sync) or `astream` (on the event loop)."""
    engine, calls = inference.engine_get(), []

    class Watched:
        def stream(self, request):
            calls.append("stream")
            return engine.stream(request)

        async def astream(self, request):
            calls.append("astream")
            return await engine.astream(request)

    monkeypatch.setattr(run_services, "engine_get", lambda: Watched())
    return calls


@pytest.fixture
def key(store):
    return api_key_create(user=UserFactory(), name="async")[1]


def test_a_page_run_streams_on_the_event_loop(engine_calls):
    answer = asyncio.run(asgi_post("/apps/translator/run", TRANSLATE))
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/event-stream")
    events = answer.events
    assert any(e.get("delta") for e in events) and events[-1]["done"] is True
    assert engine_calls == ["astream"]  # opened on the loop: no thread waits on it
    run = AppRun.objects.get(app__slug="translator")
    assert run.finish_reason in ("stop", "length") and run.completion_tokens == events[-1]["usage"]["completion_tokens"]
    assert not StreamSlot.objects.exists()


def test_the_native_api_and_v1_stream_on_the_event_loop(engine_calls, key):
    native = asyncio.run(asgi_post("/api/v1/apps/translator/runs/", {**TRANSLATE, "stream": True}, key=key))
    assert native.status == 200 and native.events[-1]["done"] is True
    v1 = asyncio.run(asgi_post("/v1/chat/completions", {
        "model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "n": 2,
        "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}, key=key))
    assert v1.status == 200
    *chunks, usage, done = v1.events
    assert done == "[DONE]" and usage["usage"]["completion_tokens"] == 10 and usage["choices"] == []
    assert {c["choices"][0]["index"] for c in chunks} == {0, 1}
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"][0]["finish_reason"]] == ["length", "length"]
    completions = asyncio.run(asgi_post("/v1/completions", {
        "model": "smollm2-135m-instruct", "prompt": "Once upon a time", "max_tokens": 4, "stream": True}, key=key))
    assert completions.status == 200 and completions.events[-1] == "[DONE]"
    # Two streams opened for n=2, together; the non-streaming answers stay sync.
    assert engine_calls == ["astream", "astream", "astream", "astream"]
    assert AppRun.objects.filter(app=None, finish_reason="length").count() == 3  # n=2 is two rows, and the completion
    v1_plain = asyncio.run(asgi_post("/v1/chat/completions", {
        "model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}, key=key))
    assert v1_plain.status == 200 and v1_plain.json()["usage"]["completion_tokens"] == 3
    assert engine_calls[-1] == "stream"


def test_a_client_that_leaves_is_recorded_and_its_generation_stops(store, key):
    """The ASGI handler cancels the response: the engine's stream is closed at once (its sequence leaves the
    batch) and what was sent is recorded, billed, with finish_reason `cancelled`."""
    body = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Tell me a story."}],
            "max_tokens": 400, "temperature": 0, "stream": True, "ignore_eos": True}
    engine = inference.engine_get()

    async def leave_then_look():
        answer = await asgi_post("/v1/chat/completions", body, key=key, leave_after=4)
        scheduler = next(iter(engine.cache.loaded())).scheduler
        deadline = time.monotonic() + 10
        while scheduler.load and time.monotonic() < deadline:  # the scheduler drops it at its next step
            await asyncio.sleep(0.05)
        return answer, scheduler.load

    answer, load = asyncio.run(leave_then_look())
    assert answer.status == 200 and len(answer.chunks) == 4
    assert load == 0, "the generation went on after the client left"
    run = AppRun.objects.get()
    assert run.finish_reason == "cancelled" and 3 <= run.completion_tokens < 400
    assert not StreamSlot.objects.exists()


def test_the_recording_survives_a_second_cancellation(store, user):
    """A server that cancels the response twice (shutting down while the first clean-up runs) still records it."""
    from apps.catalog.models import StoreApp

    async def scenario():
        run = await sync_to_async(run_services.app_run_start)(
            caller=run_services.Caller(user), app=await StoreApp.objects.aget(slug="chatbot"),
            inputs={"message": "Tell me a story."}, stream_async=True)
        events = run_services.arun_events(run)

        async def read():
            async for _ in events:
                pass

        task = asyncio.ensure_future(read())
        await asyncio.sleep(0.5)
        task.cancel()
        await asyncio.sleep(0)  # the first cancellation is in; its clean-up has started
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(200):  # the shielded clean-up goes on without the task
            if await AppRun.objects.filter(finish_reason="cancelled").aexists():
                break
            await asyncio.sleep(0.05)

    asyncio.run(scenario())
    run = AppRun.objects.get()
    assert run.finish_reason == "cancelled" and run.user == user
    assert not StreamSlot.objects.exists()


@pytest.fixture
def busy_engine(store, monkeypatch):
    """A real engine with room for one sequence and no queue: a second request while one streams is refused."""
    engine = LocalEngine(dtype="float32", max_batch=1, queue_limit=0)
    monkeypatch.setattr(run_services, "engine_get", lambda: engine)
    yield engine
    engine.close()


@contextmanager
def engine_held(engine):
    """One long generation that keeps the engine's only slot (fresh for each check: the tiny model is quick)."""
    from apps.inference.types import GenerationRequest, SamplingParams

    spec = inference.model_spec_resolve(user=None, reference="smollm2-135m-instruct")
    stream = engine.stream(GenerationRequest(model=spec, prompt="Once", params=SamplingParams(max_tokens=500, ignore_eos=True)))
    next(stream)
    try:
        yield
    finally:
        stream.close()
        scheduler = engine.cache.get(spec).scheduler
        deadline = time.monotonic() + 10
        while scheduler.load and time.monotonic() < deadline:  # it leaves the batch at the scheduler's next step
            time.sleep(0.02)


def test_a_busy_engine_is_a_503_people_can_read(busy_engine, client, key):
    with engine_held(busy_engine):
        page = asyncio.run(asgi_post("/apps/translator/run", TRANSLATE))  # under ASGI: refused while opening
    assert page.status == 503, page.chunks
    error = page.json()["error"]
    seconds = int(page.headers["retry-after"])
    assert seconds >= 1 and error["code"] == "engine_overloaded" and error["type"] == "server_error"
    assert error["message"] == f"The model is busy: try again in {seconds} s."
    with engine_held(busy_engine):  # the sync path (WSGI, the test client)
        native = client.post("/api/v1/apps/translator/runs/", data=json.dumps({**TRANSLATE, "stream": True}),
                             content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert native.status_code == 503 and int(native["Retry-After"]) >= 1
    assert native.json()["error"]["message"].startswith("The model is busy: try again in")
    with engine_held(busy_engine):
        translated = client.post("/apps/translator/run", data=json.dumps(TRANSLATE), content_type="application/json",
                                 HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert translated.status_code == 503 and translated.json()["error"]["message"].startswith("模型正忙")
    assert not StreamSlot.objects.exists()  # a refused run holds no slot
    # ... and spends no request of anyone's quota: the key's, its user's, the anonymous address's windows count 0
    assert RateWindow.objects.exists() and set(RateWindow.objects.values_list("requests", flat=True)) == {0}
    assert asyncio.run(asgi_post("/apps/translator/run", TRANSLATE)).status == 200  # free again: it answers


def test_a_busy_engine_on_v1_is_openais_server_error(busy_engine, key):
    """The official client sees a 503 InternalServerError, code engine_overloaded, with Retry-After (it retries
    such an answer after that many seconds; here with retries off)."""
    import httpx2
    import openai

    from store.asgi import application

    async def call(stream: bool):
        http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=application), base_url="http://testserver")
        client = openai.AsyncOpenAI(base_url="http://testserver/v1", api_key=key, http_client=http, max_retries=0)
        with pytest.raises(openai.InternalServerError) as refused:
            await client.chat.completions.create(model="smollm2-135m-instruct", stream=stream, max_tokens=4,
                                                 messages=[{"role": "user", "content": "Hi"}])
        await http.aclose()
        return refused.value

    for stream in (False, True):
        with engine_held(busy_engine):
            error = asyncio.run(call(stream))
        assert error.status_code == 503 and error.code == "engine_overloaded"
        assert error.body["type"] == "server_error" and error.body["message"].startswith("The model is busy")
        assert int(error.response.headers["retry-after"]) >= 1


@pytest.fixture
def handler():
    """The web's Django handler. Imported before the test runs: its first import configures logging, which would
    take caplog's handler off the root logger in the middle of a test."""
    from store.asgi import django_application

    return django_application


class ViewsEnded(list):
    start_after = 0.0


@pytest.fixture
def views_ended(handler, monkeypatch):
    """An event per request that the web handler's thread sets when the view has returned. A client that leaves
    early gets its answer cancelled at once while the view goes on in its thread (it may not even have taken its
    stream slot yet): what the request leaves behind can only be judged after that. `ended.start_after`: seconds a
    view waits in its thread before it starts (as when every thread of the pool was busy)."""
    ended, view = ViewsEnded(), handler._response_in_thread

    def tracked(request):
        ended.append(done := threading.Event())
        time.sleep(ended.start_after)
        try:
            return view(request)
        finally:
            done.set()

    monkeypatch.setattr(handler, "_run", sync_to_async(tracked, thread_sensitive=False, executor=handler._pool))
    return ended


@pytest.mark.parametrize("leave_in", [0.01, 0.03, 0.06])
def test_a_client_that_leaves_before_the_answer_starts_leaves_nothing_running(store, key, monkeypatch, views_ended,
                                                                               caplog, leave_in):
    """Gone while the view still runs (its streams maybe open already): the server drops the response unread, and
    the run is closed at once (not when the unread-run watchdog gives up on it), freed and recorded; no answer is
    generated into the void, and nothing fails in the view that went on without its client."""
    monkeypatch.setattr(run_services, "UNREAD_SECONDS", 60)
    body = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Tell me a story."}],
            "max_tokens": 400, "temperature": 0, "stream": True, "ignore_eos": True}
    spec = inference.model_spec_resolve(user=None, reference="smollm2-135m-instruct")
    scheduler = inference.engine_get().cache.get(spec).scheduler  # loaded: the view gets as far as opening the stream

    async def leave_early():
        answer = await asgi_post("/v1/chat/completions", body, key=key, leave_in=leave_in)
        [view_ended] = views_ended
        assert await asyncio.to_thread(view_ended.wait, 10), "the view still runs 10 s after the client left"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not scheduler.load and not await StreamSlot.objects.aexists():
                break
            await asyncio.sleep(0.05)
        return answer, scheduler.load

    answer, load = asyncio.run(leave_early())
    assert load == 0 and not StreamSlot.objects.exists(), (leave_in, answer.status)
    assert not [r.getMessage() for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    runs = list(AppRun.objects.values_list("finish_reason", "completion_tokens"))
    assert all(reason == "cancelled" and tokens < 400 for reason, tokens in runs), runs
    print(f"left after {leave_in} s: answer {answer.status}, {len(answer.chunks)} pieces, runs {runs}")


def test_a_view_that_starts_after_its_client_left_still_reads_the_request(store, key, views_ended, caplog):
    """Django closes a request's body when the request ends, which is at once when the client leaves; a view that
    only reads it then (its thread was busy) reads it all the same, sees the client gone and starts nothing."""
    views_ended.start_after = 0.3
    body = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Hi"}], "stream": True}

    async def leave_at_once():
        answer = await asgi_post("/v1/chat/completions", body, key=key, leave_in=0.05)
        assert await asyncio.to_thread(views_ended[0].wait, 10)
        return answer

    assert asyncio.run(leave_at_once()).status == 0
    assert not [r.getMessage() for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    assert not StreamSlot.objects.exists() and not AppRun.objects.exists()
    assert set(RateWindow.objects.values_list("requests", flat=True)) <= {0}  # nothing served, nothing spent


def test_a_client_that_leaves_once_its_streams_are_open_stops_them_at_once(store, key, monkeypatch, views_ended):
    """The client leaves just after the run opened its stream on the model, while the view is still on its way to
    the response: the response is never read, and the run is closed, freed and recorded as cancelled at once."""
    monkeypatch.setattr(run_services, "UNREAD_SECONDS", 60)
    opener, start, opened = run_services._astreams_open, run_services._run_start, asyncio.Event()

    async def open_then_leave(engine, requests):
        streams = await opener(engine, requests)
        opened.set()  # the client leaves now
        return streams

    def start_slowly(**kwargs):
        run = start(**kwargs)
        time.sleep(0.3)  # the view is still running when the disconnect arrives
        return run

    monkeypatch.setattr(run_services, "_astreams_open", open_then_leave)
    monkeypatch.setattr(run_services, "_run_start", start_slowly)
    body = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Tell me a story."}],
            "max_tokens": 400, "temperature": 0, "stream": True, "ignore_eos": True}
    spec = inference.model_spec_resolve(user=None, reference="smollm2-135m-instruct")
    scheduler = inference.engine_get().cache.get(spec).scheduler

    async def leave_once_open():
        answer = await asgi_post("/v1/chat/completions", body, key=key, leave_on=opened)
        left = time.monotonic()
        assert await asyncio.to_thread(views_ended[0].wait, 10)
        while (scheduler.load or await StreamSlot.objects.aexists()) and time.monotonic() < left + 10:
            await asyncio.sleep(0.02)
        return answer, time.monotonic() - left

    answer, cleared_in = asyncio.run(leave_once_open())
    assert answer.status == 0 and scheduler.load == 0 and not StreamSlot.objects.exists()
    assert cleared_in < 5, cleared_in  # not the watchdog's 60 s
    [(reason, tokens)] = AppRun.objects.values_list("finish_reason", "completion_tokens")
    assert reason == "cancelled" and tokens < 400


def test_every_choice_stops_when_the_client_leaves(store, key, monkeypatch):
    """n=2: the client leaves while the first choice streams; the second, not read yet, is cancelled too."""
    engine, opened = inference.engine_get(), []

    class Watched:
        async def astream(self, request):
            opened.append(await engine.astream(request))
            return opened[-1]

    monkeypatch.setattr(run_services, "engine_get", lambda: Watched())
    body = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "Tell me a story."}],
            "max_tokens": 400, "temperature": 0, "stream": True, "ignore_eos": True, "n": 2}
    answer = asyncio.run(asgi_post("/v1/chat/completions", body, key=key, leave_after=4))
    assert answer.status == 200 and len(opened) == 2
    sequences = [stream.seq for stream in opened]
    assert all(seq.cancelled.is_set() for seq in sequences)
    assert list(AppRun.objects.values_list("finish_reason", flat=True)) == ["cancelled"]

"""Streaming responses that really stream under ASGI.

Django serves a *sync* iterator under ASGI by reading it to the end first (StreamingHttpResponse.__aiter__), so
a token stream would arrive all at once. `threaded_aiter` runs the sync iterator (which may use the ORM and the
engine) in a thread of its own and hands each item to the event loop as it comes. When the client goes away,
Django cancels the response; the thread then closes the iterator, which frees the engine's slot at once.
Under WSGI (a WSGI server, the test client) a sync iterator streams as it is, in the request's own thread.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator

from django.core.handlers.asgi import ASGIRequest
from django.db import connections
from django.http import StreamingHttpResponse

from apps.core.errors import StoreError, error_body_for


def threaded_aiter(make_iterable: Callable[[], Iterable]) -> AsyncIterator:
    async def agen():
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def put(kind, item=None):
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, item))
            except RuntimeError:  # the loop is gone (client left, server stopping): nobody is listening
                stop.set()

        def work():
            iterator = None
            try:
                iterator = iter(make_iterable())
                for item in iterator:
                    if stop.is_set():
                        break
                    put("item", item)
            except BaseException as exc:  # handed to the consumer, which raises it
                put("error", exc)
            finally:
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()
                connections.close_all()  # this thread's database connections end with it
                put("end")

        threading.Thread(target=work, name="stream", daemon=True).start()
        try:
            while True:
                kind, item = await queue.get()
                if kind == "item":
                    yield item
                elif kind == "error":
                    raise item
                else:
                    return
        finally:
            stop.set()

    return agen()


def sse_event(payload) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def sse_events(events: Iterable[dict]) -> Iterator[str]:
    """Each event as SSE. A generation that fails once the 200 is sent ends the stream with an error event."""
    try:
        for event in events:
            yield sse_event(event)
    except StoreError as exc:
        yield sse_event(error_body_for(exc))


def sse_response(request, make_iterable: Callable[[], Iterable[str]]) -> StreamingHttpResponse:
    """A text/event-stream response over the strings `make_iterable()` yields (each a complete SSE event)."""
    django_request = getattr(request, "_request", request)  # DRF wraps Django's request
    content = threaded_aiter(make_iterable) if isinstance(django_request, ASGIRequest) else make_iterable()
    response = StreamingHttpResponse(content, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # tell a proxy (nginx) not to buffer the stream
    return response

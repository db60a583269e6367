"""Server-sent events that really stream, with no thread per stream under ASGI.

Under ASGI a face streams an *async* iterator: the server's event loop reads it, and the engine's streams it reads
were opened on that same loop (the run service's `stream_async`), so nothing but the loop waits on a stream. When
the client goes away, Django cancels the response; the iterator's `finally` closes the engine's streams at once.
Django would read a *sync* iterator to its end under ASGI before sending anything, so `sse_response` refuses one
there. Under WSGI (a WSGI server, the test client) a sync iterator streams as it is, in the request's own thread.

The helpers here (`map_events`, `sse_events`) take either kind and give back the same kind, so a face shapes its
events once for both.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from contextlib import aclosing, contextmanager

from django.core.handlers.asgi import ASGIRequest
from django.http import StreamingHttpResponse

from apps.core.errors import StoreError, error_body_for


def streams_async(request) -> bool:
    """True when the answer may stream from an async iterator: the request came through an ASGI server."""
    return isinstance(getattr(request, "_request", request), ASGIRequest)  # DRF wraps Django's request


def _is_async(source) -> bool:
    return hasattr(source, "__aiter__")


@contextmanager
def _closing(source: Iterable):
    """Iterate `source`, closed on the way out if it can be (a generator; a list's iterator cannot)."""
    iterator = iter(source)
    try:
        yield iterator
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def map_events(source: Iterable | AsyncIterable, shape: Callable[[object], Iterable]) -> Iterator | AsyncIterator:
    """Every item that `shape(event)` gives for each event of `source`, sync or async as `source` is. Closing the
    result closes `source` at once (an engine's stream under it stops)."""
    if _is_async(source):
        async def amapped():
            async with aclosing(source) as events:
                async for event in events:
                    for item in shape(event):
                        yield item
        return amapped()

    def mapped():
        with _closing(source) as events:
            for event in events:
                yield from shape(event)
    return mapped()


def sse_event(payload) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def sse_events(payloads: Iterable[dict] | AsyncIterable[dict], *, end: str | None = None) -> Iterator[str] | AsyncIterator[str]:
    """Each payload as an SSE event, then `data: <end>` (OpenAI's `[DONE]`) if given; sync or async as `payloads`
    is. A generation that fails once the 200 is sent ends the stream with an error event (and no `end`)."""
    if _is_async(payloads):
        async def aevents():
            try:
                async with aclosing(payloads) as items:
                    async for payload in items:
                        yield sse_event(payload)
            except StoreError as exc:
                yield sse_event(error_body_for(exc))
                return
            if end is not None:
                yield f"data: {end}\n\n"
        return aevents()

    def events():
        try:
            with _closing(payloads) as items:
                for payload in items:
                    yield sse_event(payload)
        except StoreError as exc:
            yield sse_event(error_body_for(exc))
            return
        if end is not None:
            yield f"data: {end}\n\n"
    return events()


def sse_response(request, content: Iterable[str] | AsyncIterable[str]) -> StreamingHttpResponse:
    """A text/event-stream response over `content` (each item a complete SSE event): an async iterator under ASGI
    (`streams_async(request)`), a sync one otherwise."""
    if _is_async(content) != streams_async(request):
        raise TypeError("an SSE answer streams an async iterator under ASGI and a sync one under WSGI")
    response = StreamingHttpResponse(content, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # tell a proxy (nginx) not to buffer the stream
    return response

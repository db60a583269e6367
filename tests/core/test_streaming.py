import asyncio
import json

import pytest
from django.test import AsyncRequestFactory, RequestFactory

import apps.core.streaming as streaming
from apps.core.streaming import map_events, sse_events, sse_response
from apps.inference.types import InferenceError

ERROR = {"error": {"message": "the model ran out of memory", "type": "server_error", "param": None, "code": "inference_error"}}


def failing_events():
    yield {"delta": "Hel"}
    raise InferenceError("the model ran out of memory")


async def afailing_events():
    yield {"delta": "Hel"}
    raise InferenceError("the model ran out of memory")


async def alist(source) -> list:
    return [item async for item in source]


def test_a_generation_that_fails_mid_stream_ends_with_an_error_event():
    chunks = list(sse_events(failing_events()))
    assert chunks[0] == 'data: {"delta": "Hel"}\n\n'
    assert json.loads(chunks[1].removeprefix("data: ")) == ERROR
    assert len(chunks) == 2


def test_the_async_twin_gives_the_same_events():
    assert asyncio.run(alist(sse_events(afailing_events()))) == list(sse_events(failing_events()))


def test_an_end_marker_comes_only_after_a_stream_that_did_not_fail():
    assert list(sse_events([{"a": 1}], end="[DONE]")) == ['data: {"a": 1}\n\n', "data: [DONE]\n\n"]
    assert list(sse_events(failing_events(), end="[DONE]"))[-1].startswith('data: {"error"')


def test_closing_the_mapped_stream_closes_its_source_at_once():
    """A client that leaves: the engine's stream under the shaping must be closed, not left to the garbage
    collector (an async generator would be closed only later, by the event loop's finalizer)."""
    closed = []

    def source():
        try:
            yield from range(100)
        finally:
            closed.append("sync")

    async def asource():
        try:
            for i in range(100):
                yield i
        finally:
            closed.append("async")

    mapped = map_events(source(), lambda i: [i, i])
    assert [next(mapped), next(mapped), next(mapped)] == [0, 0, 1]
    mapped.close()

    async def leave_early():
        amapped = map_events(asource(), lambda i: [i])
        assert await amapped.__anext__() == 0
        await amapped.aclose()
        return list(closed)

    assert asyncio.run(leave_early()) == ["sync", "async"]


def test_an_sse_answer_streams_the_kind_of_iterator_its_server_reads():
    """An async iterator under ASGI (read on the event loop), a sync one under WSGI; the other way round Django
    would read a sync stream to its end before sending a byte, so it is refused as a programming error."""
    wsgi, asgi = RequestFactory().post("/"), AsyncRequestFactory().post("/")
    assert not sse_response(wsgi, iter(["data: 1\n\n"])).is_async
    assert sse_response(asgi, sse_events(afailing_events())).is_async
    with pytest.raises(TypeError):
        sse_response(asgi, iter(["data: 1\n\n"]))
    with pytest.raises(TypeError):
        sse_response(wsgi, sse_events(afailing_events()))


def test_no_stream_runs_in_a_thread_of_its_own():
    assert not hasattr(streaming, "threaded_aiter")

import json

from apps.core.streaming import sse_events
from apps.inference.types import InferenceError


def test_a_generation_that_fails_mid_stream_ends_with_an_error_event():
    def events():
        yield {"delta": "Hel"}
        raise InferenceError("the model ran out of memory")

    chunks = list(sse_events(events()))
    assert chunks[0] == 'data: {"delta": "Hel"}\n\n'
    assert json.loads(chunks[1].removeprefix("data: ")) == {
        "error": {"message": "the model ran out of memory", "type": "server_error", "param": None, "code": "inference_error"}
    }
    assert len(chunks) == 2

"""The model server (apps/inference/server.py) on the tiny model: in process (Starlette's test client, and real
uvicorn in a thread where a test watches the scheduler), and as a real process with the official `openai` client."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from contextlib import contextmanager

import httpx2
import openai
import pytest
import uvicorn
from starlette.testclient import TestClient

from apps.inference import local as local_module
from apps.inference.local import LocalEngine
from apps.inference.server import create_app
from apps.inference.types import GenerationRequest, ModelSpec, SamplingParams
from tests.inference.conftest import chat
from tests.live import free_port, model_server, wait_for

MODEL = "smollm2-135m-instruct@v1"
TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HI = [{"role": "user", "content": "Tell me about the sea."}]


@pytest.fixture
def tiny_ref_spec(tiny_hf_dir) -> ModelSpec:
    """The tiny model as the engine fixture knows it, to compare the server's answers with."""
    return ModelSpec(key="tiny@v1", path=str(tiny_hf_dir))


@pytest.fixture
def client(engine, tiny_version, registry_root):
    with TestClient(create_app(engine, registry_root=registry_root, token=TOKEN)) as c:
        yield c


@pytest.fixture
def small_engine():
    """An engine of its own, one sequence at a time and no queue: the scheduler's load is this test's alone."""
    eng = LocalEngine(dtype="float32", max_batch=1, queue_limit=0)
    yield eng
    eng.close()


@contextmanager
def served(app):
    """Real uvicorn in a thread: real sockets, so a closed connection is a real disconnect."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=30, what="uvicorn to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def body(**fields) -> dict:
    return {"model": MODEL, "messages": HI, "temperature": 0, **fields}


def sse_payloads(lines) -> list:
    return [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]


def assert_openai_error(response, status: int, code: str, param: str | None = None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["code"] == code
    assert error["type"] == ("server_error" if status >= 500 else "invalid_request_error")
    if param is not None:
        assert error["param"] == param
    return error


# --- auth, references, bad input --------------------------------------------------------------------------------
def test_bare_health_is_open_and_everything_else_wants_the_token(client):
    assert client.get("/health").json() == {"status": "ok"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        assert_openai_error(client.get("/v1/models", headers=headers), 401, "invalid_api_key")
        assert_openai_error(client.post("/v1/chat/completions", json=body(max_tokens=1), headers=headers), 401,
                            "invalid_api_key")
        assert_openai_error(client.post("/tokenize", json={"model": MODEL, "prompt": "x"}, headers=headers), 401,
                            "invalid_api_key")
        assert_openai_error(client.get("/health", params={"model": MODEL}, headers=headers), 401, "invalid_api_key")
        assert_openai_error(client.get("/health?model=", headers=headers), 401, "invalid_api_key")
        assert_openai_error(client.get("/no-such-page", headers=headers), 401, "invalid_api_key")
    assert client.get("/v1/models", headers=AUTH).status_code == 200
    assert_openai_error(client.get("/no-such-page", headers=AUTH), 404, "not_found")


def test_health_with_a_model_loads_it_and_models_lists_it(client):
    answer = client.get("/health", params={"model": MODEL}, headers=AUTH)
    assert answer.json() == {"status": "ok", "model": MODEL, "engine": "transformers"}  # the default engine
    assert MODEL in [m["id"] for m in client.get("/v1/models", headers=AUTH).json()["data"]]
    # A bare id is its newest version.
    assert client.get("/health", params={"model": "smollm2-135m-instruct"}, headers=AUTH).json()["model"] == MODEL
    assert_openai_error(client.get("/health", params={"model": "nope@v1"}, headers=AUTH), 404, "model_not_found")


def test_unknown_models_and_references_out_of_the_root_are_refused(client, registry_root, tiny_hf_dir, tmp_path):
    outside = tmp_path / "outside"
    shutil.copytree(tiny_hf_dir, outside / "1")
    (registry_root / "evil").symlink_to(outside)  # a model folder that leads out of the root
    (registry_root / "smollm2-135m-instruct" / "7").symlink_to(outside / "1")  # a version folder that does
    linked = registry_root / "linked" / "1"
    linked.mkdir(parents=True)
    for f in (outside / "1").iterdir():  # a version whose files lead out
        (linked / f.name).symlink_to(f)
    for model in ("no-such-model@v1", "smollm2-135m-instruct@v9", "smollm2-135m-instruct@latest", "../../etc/passwd",
                  "../outside@v1", str(outside / "1"), "evil@v1", "smollm2-135m-instruct@v7", "linked@v1", "..", "@v1"):
        assert_openai_error(client.post("/v1/chat/completions", json=body(model=model, max_tokens=1), headers=AUTH),
                            404, "model_not_found", "model")
        assert_openai_error(client.post("/tokenize", json={"model": model, "prompt": "x"}, headers=AUTH), 404,
                            "model_not_found")
    loaded = [m["id"] for m in client.get("/v1/models", headers=AUTH).json()["data"]]
    assert not any(key.startswith(("evil", "linked")) or key.endswith("@v7") for key in loaded)


@pytest.mark.parametrize(("fields", "code", "param"), [
    ({"temperature": 3}, "invalid_sampling", "temperature"),
    ({"temperature": "hot"}, "invalid_sampling", "temperature"),
    ({"top_p": 0}, "invalid_sampling", "top_p"),
    ({"max_tokens": 0}, "invalid_sampling", "max_tokens"),
    ({"max_tokens": 2.5}, "invalid_sampling", "max_tokens"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "invalid_sampling", "stop"),
    ({"num_beams": 20}, "invalid_sampling", "num_beams"),
    ({"top_k": -1}, "invalid_sampling", "top_k"),
    ({"seed": True}, "invalid_sampling", "seed"),
    ({"n": 2}, "invalid_request", "n"),
    ({"messages": []}, "invalid_request", "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "invalid_request", "messages"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "invalid_request", "messages"),
    ({"model": None}, "invalid_request", "model"),
    ({"stream": "yes"}, "invalid_request", "stream"),
    ({"messages": [{"role": "user", "content": "word " * 600}]}, "context_length_exceeded", "messages"),
    ({"max_tokens": 500}, "context_length_exceeded", "max_tokens"),
])
def test_bad_requests_are_400_in_openai_shape(client, fields, code, param):
    assert_openai_error(client.post("/v1/chat/completions", json=body(**fields), headers=AUTH), 400, code, param)


def test_malformed_bodies_are_400(client):
    for raw in (b"{not json", b"[1, 2]", b""):
        response = client.post("/v1/completions", content=raw, headers={**AUTH, "Content-Type": "application/json"})
        assert_openai_error(response, 400, "invalid_request")
    assert_openai_error(client.post("/v1/completions", json={"model": MODEL, "prompt": 5}, headers=AUTH), 400,
                        "invalid_request", "prompt")
    assert_openai_error(client.post("/tokenize", json={"model": MODEL}, headers=AUTH), 400, "invalid_request")


# --- answers ----------------------------------------------------------------------------------------------------
def test_chat_and_completions_answer_as_the_engine_does(client, engine, tiny_ref_spec):
    expected = engine.generate(chat(tiny_ref_spec, max_tokens=10, temperature=0))
    answer = client.post("/v1/chat/completions", json=body(max_tokens=10), headers=AUTH).json()
    assert answer["object"] == "chat.completion" and answer["model"] == MODEL and answer["id"].startswith("chatcmpl-")
    assert answer["choices"] == [{"index": 0, "message": {"role": "assistant", "content": expected.text},
                                  "logprobs": None, "finish_reason": "length"}]
    assert answer["usage"] == {"prompt_tokens": expected.prompt_tokens, "completion_tokens": 10,
                               "total_tokens": expected.prompt_tokens + 10}
    # Plain completions take OpenAI's default of 16 tokens; seeds repeat; stop strings cut.
    plain = GenerationRequest(model=tiny_ref_spec, prompt="Once upon a time",
                              params=SamplingParams(max_tokens=16, temperature=0.9, seed=3))
    expected = engine.generate(plain)
    answer = client.post("/v1/completions", json={"model": MODEL, "prompt": ["Once upon a time"], "temperature": 0.9,
                                                  "seed": 3}, headers=AUTH).json()
    assert answer["object"] == "text_completion" and answer["choices"][0]["text"] == expected.text
    assert answer["usage"]["completion_tokens"] == 16
    stop = expected.text[4:8]
    cut = client.post("/v1/completions", json={"model": MODEL, "prompt": "Once upon a time", "temperature": 0.9,
                                               "seed": 3, "stop": stop}, headers=AUTH).json()["choices"][0]
    assert (cut["text"], cut["finish_reason"]) == (expected.text[: expected.text.index(stop)], "stop")


def test_extra_body_fields_reach_the_engine(client, engine, tiny_ref_spec):
    fields = {"top_k": 5, "repetition_penalty": 1.3, "no_repeat_ngram_size": 2, "temperature": 0.8, "seed": 11,
              "max_tokens": 12}
    expected = engine.generate(chat(tiny_ref_spec, **fields))
    answer = client.post("/v1/chat/completions", json=body(**fields), headers=AUTH).json()
    assert answer["choices"][0]["message"]["content"] == expected.text
    beams = engine.generate(chat(tiny_ref_spec, max_tokens=6, temperature=0, num_beams=3))
    answer = client.post("/v1/chat/completions", json=body(max_tokens=6, num_beams=3), headers=AUTH).json()
    assert answer["choices"][0]["message"]["content"] == beams.text
    spared = {**fields, "temperature": 0, "penalize_prompt": False}  # the penalty over the answer alone
    expected = engine.generate(chat(tiny_ref_spec, **spared))
    answer = client.post("/v1/chat/completions", json=body(**spared), headers=AUTH).json()
    assert answer["choices"][0]["message"]["content"] == expected.text
    long = client.post("/v1/chat/completions", json=body(max_tokens=20, ignore_eos=True), headers=AUTH).json()
    assert long["usage"]["completion_tokens"] == 20


def test_streams_are_openai_chunks_with_a_usage_chunk(client, engine, tiny_ref_spec):
    expected = engine.generate(chat(tiny_ref_spec, max_tokens=12, temperature=0))
    with client.stream("POST", "/v1/chat/completions", headers=AUTH,
                       json=body(max_tokens=12, stream=True, stream_options={"include_usage": True})) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        payloads = sse_payloads(response.iter_lines())
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1]) == expected.text
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]][-1] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 12
    assert all(c["usage"] is None for c in chunks[:-1])
    # Plain completions stream text chunks; without include_usage no usage field.
    with client.stream("POST", "/v1/completions", headers=AUTH,
                       json={"model": MODEL, "prompt": "Once", "max_tokens": 5, "stream": True}) as response:
        chunks = [json.loads(p) for p in sse_payloads(response.iter_lines())[:-1]]
    assert all(c["object"] == "text_completion" and "usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_tokenize_counts_as_the_engine(client, engine, tiny_ref_spec):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there!"}]
    counted = client.post("/tokenize", json={"model": MODEL, "messages": messages}, headers=AUTH).json()
    expected = engine.tokenize(GenerationRequest(model=tiny_ref_spec, messages=messages))
    assert (counted["count"], counted["max_model_len"]) == (expected.count, expected.context) == (len(counted["tokens"]), 512)
    assert engine.generate(GenerationRequest(model=tiny_ref_spec, messages=messages,
                                             params=SamplingParams(max_tokens=1))).prompt_tokens == counted["count"]
    without = client.post("/tokenize", json={"model": MODEL, "messages": messages, "add_generation_prompt": False},
                          headers=AUTH).json()
    assert without["count"] < counted["count"]
    text = client.post("/tokenize", json={"model": MODEL, "prompt": "Once upon a time"}, headers=AUTH).json()
    assert text["count"] == engine.tokenize(GenerationRequest(model=tiny_ref_spec, prompt="Once upon a time")).count


def test_a_lora_adapter_version_is_served_on_its_base(client, engine, tiny_version, tiny_hf_dir, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from apps.registry.services import model_version_register

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_hf_dir, dtype=torch.float32)
    # init_lora_weights=False: random A and B, so the adapter changes the answer from the first token.
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(tmp_path / "adapter")
    adapter_config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = "smollm2-135m-instruct@v1"  # by registry reference, as the runner writes it
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps(adapter_config))
    name = "ft:smollm2-135m-instruct:alice::ftjob-abc"
    version = model_version_register(name=name, source_dir=tmp_path / "adapter", kind="lora", base_version=tiny_version)
    expected = engine.generate(chat(ModelSpec(key="tiny-adapter@v1", path=str(tmp_path / "adapter"), kind="lora",
                                              base=ModelSpec(key="tiny@v1", path=str(tiny_hf_dir))),
                                    max_tokens=10, temperature=0))
    answer = client.post("/v1/chat/completions", json=body(model=version.reference, max_tokens=10), headers=AUTH).json()
    assert answer["choices"][0]["message"]["content"] == expected.text
    base_text = client.post("/v1/chat/completions", json=body(max_tokens=10), headers=AUTH).json()
    assert base_text["choices"][0]["message"]["content"] != expected.text
    # An adapter whose base is not in the registry cannot be served: a 503 that says why, not a 500.
    adapter_config["base_model_name_or_path"] = "../../elsewhere"
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps(adapter_config))
    orphan = model_version_register(name="orphan", source_dir=tmp_path / "adapter", kind="lora", base_version=tiny_version)
    error = assert_openai_error(client.post("/v1/chat/completions", json=body(model=orphan.reference, max_tokens=1),
                                            headers=AUTH), 503, "model_unavailable")
    assert "not in the registry" in error["message"]


# --- the scheduler behind the server: disconnects, admission, beam search -------------------------------------
def open_stream(http: httpx2.Client, base: str, **fields):
    """Start a streamed chat completion and read up to its first piece of text; returns the open response and its
    line iterator (kept: a line iterator that is garbage-collected closes the response)."""
    response = http.send(http.build_request("POST", f"{base}/v1/chat/completions", headers=AUTH,
                                            json=body(stream=True, **fields)), stream=True)
    assert response.status_code == 200, response.read()
    lines = response.iter_lines()
    for line in lines:
        if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
            break
    return response, lines


def raw_post(base: str, path: str, payload: dict) -> socket.socket:
    """A request on a bare socket: the test closes it whenever it likes."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    data = json.dumps(payload).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n")
    sock.sendall(head.encode() + data)
    return sock


def test_a_client_that_disconnects_cancels_its_generation_at_once(small_engine, tiny_version, registry_root):
    app = create_app(small_engine, registry_root=registry_root, token=TOKEN)
    with served(app) as base:
        with httpx2.Client(timeout=60) as http:
            response, _lines = open_stream(http, base, max_tokens=450, ignore_eos=True)
            scheduler = small_engine.scheduler_for(MODEL)
            assert scheduler.load == 1
            response.close()  # the connection goes
        steps_at_close = scheduler.steps
        wait_for(lambda: scheduler.load == 0, timeout=30, interval=0.05, what="the cancelled sequence to leave")
        # Finished as cancelled within a few steps, not after the 450 tokens it asked for.
        assert scheduler.steps - steps_at_close < 20
        # The same for a request that does not stream: the server notices the socket close while it generates.
        started = scheduler.steps
        sock = raw_post(base, "/v1/chat/completions", body(max_tokens=450, ignore_eos=True))
        wait_for(lambda: scheduler.steps > started + 2, timeout=60, interval=0.01, what="the generation to start")
        assert scheduler.load == 1  # generating (the server may notice the close within a step, so not after it)
        steps_at_close = scheduler.steps
        sock.close()
        wait_for(lambda: scheduler.load == 0, timeout=30, interval=0.05, what="the cancelled sequence to leave")
        assert scheduler.steps - steps_at_close < 20


def test_a_full_queue_is_a_503_with_retry_after_and_never_a_hang(small_engine, tiny_version, registry_root):
    app = create_app(small_engine, registry_root=registry_root, token=TOKEN)  # max_batch 1, queue_limit 0
    with served(app) as base, httpx2.Client(timeout=60) as http:
        running, _lines = open_stream(http, base, max_tokens=450, ignore_eos=True)
        started = time.monotonic()
        with httpx2.Client(timeout=60) as other:
            refused = other.post(f"{base}/v1/chat/completions", headers=AUTH, json=body(max_tokens=4))
            assert time.monotonic() - started < 10  # answered at once, not queued behind the long one
            error = assert_openai_error(refused, 503, "engine_overloaded")
            assert "busy" in error["message"]
            assert int(refused.headers["Retry-After"]) >= 1
            streamed = other.post(f"{base}/v1/chat/completions", headers=AUTH, json=body(max_tokens=4, stream=True))
            assert_openai_error(streamed, 503, "engine_overloaded")  # refused before any event
            running.close()
            scheduler = small_engine.scheduler_for(MODEL)
            wait_for(lambda: scheduler.load == 0, timeout=30, interval=0.05, what="the slot to free")
            answer = other.post(f"{base}/v1/chat/completions", headers=AUTH, json=body(max_tokens=4))
            assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 4


def test_a_beam_search_neither_blocks_a_greedy_stream_nor_outlives_its_client(tiny_version, registry_root):
    eng = LocalEngine(dtype="float32", max_batch=4)
    app = create_app(eng, registry_root=registry_root, token=TOKEN)
    try:
        with served(app) as base, httpx2.Client(timeout=120) as http:
            beam = http.send(http.build_request("POST", f"{base}/v1/chat/completions", headers=AUTH,
                                                json=body(stream=True, max_tokens=200, num_beams=4, ignore_eos=True)),
                             stream=True)
            assert beam.status_code == 200
            wait_for(lambda: eng.scheduler_for(MODEL) is not None and eng.scheduler_for(MODEL).beam is not None,
                     timeout=60, interval=0.02, what="the beam search to start")
            scheduler = eng.scheduler_for(MODEL)
            searching = scheduler.beam
            # A greedy request beside it gets its whole answer while the beam search is still on its way.
            answer = http.post(f"{base}/v1/chat/completions", headers=AUTH, json=body(max_tokens=8)).json()
            assert answer["usage"]["completion_tokens"] == 8
            assert scheduler.beam is searching and not searching.done and scheduler.beam_steps < 200
            beam.close()  # the beam's client goes: the search stops at its next step
            steps_at_close = scheduler.beam_steps
            wait_for(lambda: scheduler.load == 0, timeout=60, interval=0.05, what="the beam search to stop")
            assert scheduler.beam is None and scheduler.beam_steps - steps_at_close < 10
    finally:
        eng.close()


def test_beam_search_answers_are_capped(engine, tiny_ref_spec, monkeypatch):
    monkeypatch.setattr(local_module, "BEAM_MAX_NEW_TOKENS", 5)
    result = engine.generate(chat(tiny_ref_spec, max_tokens=40, temperature=0, num_beams=2, ignore_eos=True))
    assert (result.completion_tokens, result.finish_reason) == (5, "length")


def test_retry_after_grows_with_the_work_ahead(tiny_ref_spec):
    """The estimate: the running answer's expected remaining tokens times the recent step time, at least 1 s."""
    from apps.inference.scheduler import BatchScheduler, Sequence

    scheduler = BatchScheduler(tiny_ref_spec, lambda spec: None, max_batch=1)
    scheduler.ready.wait()
    scheduler.step_seconds, scheduler.answer_tokens = 0.5, 100.0
    running = Sequence(prompt_ids=[1], max_new_tokens=300, sampler=None, assembler=None)
    running.generated = [0] * 40
    scheduler.active = [running]
    assert scheduler._wait_estimate(1) == 30  # (100 - 40) tokens x 0.5 s
    scheduler._waiting.append(Sequence(prompt_ids=[1], max_new_tokens=10, sampler=None, assembler=None))
    assert scheduler._wait_estimate(2) == 36  # then the waiting one: 1 prefill + 10 tokens
    running.max_new_tokens = 41
    assert scheduler._wait_estimate(1) == 1  # one token left: at least a second
    scheduler.active = []
    scheduler._waiting.clear()
    scheduler.stop()


# --- a real model server process and the official client ---------------------------------------------------------
def test_the_openai_client_against_a_real_model_server(tiny_version, engine, tiny_ref_spec, tmp_path):
    with model_server(log_path=tmp_path / "server.log") as (base_url, token):
        client = openai.OpenAI(base_url=base_url, api_key=token, max_retries=0)
        expected = engine.generate(chat(tiny_ref_spec, max_tokens=10, temperature=0))
        answer = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=10, temperature=0)
        assert answer.choices[0].message.content == expected.text and answer.choices[0].finish_reason == "length"
        assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (expected.prompt_tokens, 10)

        stream = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=10, temperature=0, stream=True,
                                                stream_options={"include_usage": True})
        chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected.text
        assert chunks[-1].usage.completion_tokens == 10

        fields = {"top_k": 5, "repetition_penalty": 1.3, "no_repeat_ngram_size": 2, "ignore_eos": True}
        sampled = engine.generate(chat(tiny_ref_spec, max_tokens=10, temperature=0.8, seed=4, **fields))
        answer = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=10, temperature=0.8, seed=4,
                                                extra_body=fields)
        assert answer.choices[0].message.content == sampled.text

        plain = engine.generate(GenerationRequest(model=tiny_ref_spec, prompt="Once upon a time",
                                                  params=SamplingParams(max_tokens=6, temperature=0)))
        completion = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=6, temperature=0)
        assert completion.choices[0].text == plain.text
        pieces = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=6, temperature=0,
                                           stream=True)
        assert "".join(c.choices[0].text for c in pieces if c.choices) == plain.text

        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0).models.list()
        with pytest.raises(openai.NotFoundError) as missing:
            client.chat.completions.create(model="nope@v1", messages=HI, max_tokens=1)
        assert missing.value.code == "model_not_found"
        with pytest.raises(openai.BadRequestError) as too_long:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "word " * 600}], max_tokens=1)
        assert too_long.value.code == "context_length_exceeded"
        assert [m.id for m in client.models.list().data] == [MODEL]

        root = base_url.removesuffix("/v1")
        counted = httpx2.post(f"{root}/tokenize", json={"model": MODEL, "messages": HI},
                              headers={"Authorization": f"Bearer {token}"}).json()
        assert counted["count"] == engine.tokenize(GenerationRequest(model=tiny_ref_spec, messages=HI)).count
    log = (tmp_path / "server.log").read_text()
    assert f"POST /v1/chat/completions model={MODEL} status=200 prompt={expected.prompt_tokens} completion=10" in log


def test_the_server_preloads_the_base_model_at_start_and_survives_a_missing_one(tiny_version, tmp_path):
    """`make run` is ready when /healthz is 200, and its inference check loads the base model: loaded while the
    server starts, no first request waits out the load. A preload that names nothing still leaves a server."""
    with model_server(log_path=tmp_path / "server.log", INFERENCE_PRELOAD="smollm2-135m-instruct,nope") as (base_url, token):
        client = openai.OpenAI(base_url=base_url, api_key=token, max_retries=0)
        loaded = wait_for(lambda: [m.id for m in client.models.list()], timeout=60, what="the preloaded model")
        assert loaded == [MODEL]
    log = (tmp_path / "server.log").read_text()
    assert "preloaded smollm2-135m-instruct" in log and "could not preload nope" in log

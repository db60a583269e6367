"""The remote engine (web's engine) against real servers: the store's model server process with the tiny model, and a
second store process whose /v1 is an OpenAI-compatible server without /tokenize."""

import asyncio
import logging
import shutil
import time

import pytest
from django.conf import settings

from apps.accounts.services import api_key_create
from apps.inference.layout import folder_for_model_id
from apps.inference.remote import RemoteEngine
from apps.inference.types import (
    ContextLengthExceeded,
    EngineOverloaded,
    GenerationRequest,
    ModelSpec,
    ModelUnavailable,
    SamplingParams,
    TokenCount,
)
from apps.registry.services import model_version_register
from tests.factories import UserFactory
from tests.inference.conftest import chat
from tests.live import free_port, model_server, store_server, wait_for

MODEL = ModelSpec(key="smollm2-135m-instruct@v1", path="(on the server)")  # the server finds the folder itself


@pytest.fixture(scope="module")
def served(tiny_hf_dir, tmp_path_factory):
    """A real model server process, one for this module's read-only tests: (remote engine, base URL, token). It
    needs no database: its registry is the layout alone, the tiny model as the base's version 1."""
    root = tmp_path_factory.mktemp("served-registry")
    shutil.copytree(tiny_hf_dir, root / folder_for_model_id(settings.BASE_MODEL_ID) / "1")
    with model_server(log_path=root.parent / "inference.log", MODELS_REGISTRY_ROOT=str(root)) as (base_url, token):
        remote = RemoteEngine(base_url=base_url, api_key=token)
        yield remote, base_url, token
        remote.close()


async def collect(remote: RemoteEngine, request: GenerationRequest) -> list:
    return [event async for event in await remote.astream(request)]


def test_generate_stream_and_astream_match_the_local_engine(served, engine, tiny_spec):
    remote, _, _ = served
    local = engine.generate(chat(tiny_spec, max_tokens=12, temperature=0))
    result = remote.generate(chat(MODEL, max_tokens=12, temperature=0))
    assert (result.text, result.finish_reason, result.prompt_tokens, result.completion_tokens) == (
        local.text, local.finish_reason, local.prompt_tokens, local.completion_tokens
    )
    events = list(remote.stream(chat(MODEL, max_tokens=12, temperature=0)))
    assert len(events) > 3
    assert "".join(e.delta for e in events) == events[-1].result.text == local.text
    assert (events[-1].result.completion_tokens, events[-1].result.finish_reason) == (12, "length")
    # Event loops one after the other (a test's temporary loop, then another): each gets a client of its own, and
    # a closed loop's client is dropped (its connections cannot serve another loop).
    async def on_a_new_loop():
        events = await collect(remote, chat(MODEL, max_tokens=12, temperature=0))
        return events, list(remote._async_clients.values())

    clients = []
    for _ in range(3):
        events, alive = asyncio.run(on_a_new_loop())
        assert "".join(e.delta for e in events) == events[-1].result.text == local.text
        assert events[-1].result.prompt_tokens == local.prompt_tokens
        assert len(alive) == 1 and alive[0] not in clients
        clients.append(alive[0])
    # Plain completions, seeded sampling and the extra fields go through too.
    fields = {"top_k": 5, "repetition_penalty": 1.3, "no_repeat_ngram_size": 2}
    sampled = [remote.generate(chat(MODEL, max_tokens=8, temperature=1.0, seed=9, **fields)).text for _ in range(2)]
    assert sampled[0] == sampled[1] == engine.generate(chat(tiny_spec, max_tokens=8, temperature=1.0, seed=9, **fields)).text
    plain = GenerationRequest(model=MODEL, prompt="Once upon a time", params=SamplingParams(max_tokens=6, temperature=0))
    assert remote.generate(plain).text == engine.generate(GenerationRequest(
        model=tiny_spec, prompt="Once upon a time", params=SamplingParams(max_tokens=6, temperature=0))).text


def test_tokenize_counts_exactly_as_the_local_engine(served, engine, tiny_spec):
    remote, _, _ = served
    conversation = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Tell me about the sea, the waves and the salt. Ünïcödé 海"},
        {"role": "assistant", "content": "It is wet."},
        {"role": "user", "content": "More?"},
    ]
    for prompt in [{"messages": conversation}, {"messages": conversation[:2]}, {"prompt": "Once upon a time, far away"},
                   {"prompt": ""}]:
        counted = remote.tokenize(GenerationRequest(model=MODEL, **prompt))
        assert counted == engine.tokenize(GenerationRequest(model=tiny_spec, **prompt)), prompt
    assert counted.count == 0 and counted.context == engine.tokenize(GenerationRequest(model=tiny_spec, prompt="x")).context
    # Counting is not generating: a prompt longer than the context is counted, not refused.
    long = remote.tokenize(GenerationRequest(model=MODEL, prompt="word " * 2000))
    assert long.count > long.context
    with pytest.raises(ModelUnavailable, match="404"):
        remote.tokenize(GenerationRequest(model=ModelSpec(key="no-such-model@v1", path=""), prompt="x"))


@pytest.fixture
def one_slot_server(tiny_version, tmp_path):
    """A model server that runs one answer at a time and queues none."""
    log = tmp_path / "inference.log"
    with model_server(log_path=log, INFERENCE_MAX_BATCH="1", INFERENCE_QUEUE_LIMIT="0") as (base_url, token):
        remote = RemoteEngine(base_url=base_url, api_key=token)
        yield remote, log
        remote.close()


def test_a_full_server_is_engine_overloaded_and_aclose_frees_the_slot(one_slot_server):
    remote, log = one_slot_server
    long = chat(MODEL, max_tokens=450, ignore_eos=True)  # most of the tiny model's 512-token context

    async def scenario():
        running = await remote.astream(long)
        first = await running.__anext__()
        assert first.delta
        started = time.monotonic()
        with pytest.raises(EngineOverloaded) as refused:
            await remote.astream(chat(MODEL, max_tokens=4))  # refused when awaited, before any event
        assert time.monotonic() - started < 10  # answered at once, never queued behind the long answer
        overloaded = refused.value
        assert overloaded.retry_after >= 1 and overloaded.headers == {"Retry-After": str(overloaded.retry_after)}
        assert str(overloaded) == f"The model is busy: try again in {overloaded.retry_after} s."
        with pytest.raises(EngineOverloaded):
            remote.generate(chat(MODEL, max_tokens=4))  # the sync client too, and it does not retry
        # The consumer goes away: the HTTP response closes and the server cancels the long answer at once.
        closed_at = time.monotonic()
        await running.aclose()
        return closed_at

    closed_at = asyncio.run(scenario())

    def admitted():
        try:
            return remote.generate(chat(MODEL, max_tokens=4, temperature=0))
        except EngineOverloaded:
            return None

    # The server saw its client go (status=gone: cancelled, not finished) and freed the slot.
    gone = "POST /v1/chat/completions model=smollm2-135m-instruct@v1 status=gone"
    wait_for(lambda: log.read_text().count(gone) == 1, timeout=20, interval=0.05, what="the server to log the cancel")
    result = wait_for(admitted, timeout=20, interval=0.1, what="the cancelled answer's slot to free")
    assert result.completion_tokens == 4
    assert time.monotonic() - closed_at < 20
    # A sync stream closed before its first event is read closes its response too.
    stream = remote.stream(long)
    stream.close()
    wait_for(lambda: log.read_text().count(gone) == 2, timeout=20, interval=0.05, what="the server to log the cancel")
    assert wait_for(admitted, timeout=20, interval=0.1, what="the slot to free again").completion_tokens == 4


def test_model_server_refusals_become_engine_errors(served):
    remote, base_url, _ = served
    with pytest.raises(ContextLengthExceeded, match="context"):
        remote.generate(chat(MODEL, "word " * 600, max_tokens=4))
    with pytest.raises(ContextLengthExceeded):
        asyncio.run(collect(remote, chat(MODEL, "word " * 600, max_tokens=4)))
    with pytest.raises(ModelUnavailable, match="404"):
        remote.generate(chat(ModelSpec(key="no-such-model@v1", path=""), max_tokens=4))
    wrong = RemoteEngine(base_url=base_url, api_key="wrong-token")
    with pytest.raises(ModelUnavailable, match="refused the store's token"):
        wrong.generate(chat(MODEL, max_tokens=1))
    with pytest.raises(ModelUnavailable, match="refused the store's token"):
        wrong.tokenize(chat(MODEL))


def test_check_asks_the_model_server_to_load_the_model(served):
    remote, base_url, _ = served
    assert remote.check(MODEL.key) == f"{base_url.removesuffix('/v1')}: {MODEL.key} answers and loads"
    with pytest.raises(ModelUnavailable, match="404"):
        remote.check("no-such-model@v1")
    with pytest.raises(ModelUnavailable, match="token"):
        RemoteEngine(base_url=base_url, api_key="wrong-token").check(MODEL.key)


def test_unreachable_server_is_model_unavailable():
    remote = RemoteEngine(base_url=f"http://127.0.0.1:{free_port()}/v1", timeout=5)
    for call in [remote.generate, remote.stream, remote.tokenize, lambda r: asyncio.run(collect(remote, r))]:
        with pytest.raises(ModelUnavailable, match="cannot be reached"):
            call(chat(MODEL, max_tokens=1))
    with pytest.raises(ModelUnavailable, match="cannot be reached"):
        remote.check(MODEL.key)


@pytest.fixture
def store_v1(transactional_db, tiny_hf_dir, tmp_path):
    """A second store process: its /v1 is an OpenAI-compatible server with no /tokenize and no /health."""
    model_version_register(name=settings.BASE_MODEL_ID, source_dir=tiny_hf_dir)
    _, key = api_key_create(user=UserFactory(), name="remote engine")
    with store_server(log_path=tmp_path / "store.log") as url:
        yield url, key


def test_a_server_without_tokenize_gets_an_estimate(store_v1, caplog, engine, tiny_spec):
    url, key = store_v1
    remote = RemoteEngine(base_url=f"{url}/v1", api_key=key, context=4096)
    messages = [{"role": "user", "content": "x" * 30}, {"role": "assistant", "content": "y" * 9}]
    with caplog.at_level(logging.WARNING, logger="apps.inference.remote"):
        assert remote.tokenize(GenerationRequest(model=MODEL, messages=messages)) == TokenCount(10 + 4 + 3 + 4, 4096)
        assert remote.tokenize(GenerationRequest(model=MODEL, prompt="z" * 31)) == TokenCount(11, 4096)
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1  # said once
    assert "has no /tokenize" in caplog.records[0].message
    # The store's /v1 still generates through this engine (and through its own model server behind it).
    local = engine.generate(chat(tiny_spec, max_tokens=6, temperature=0))
    assert remote.generate(chat(MODEL, max_tokens=6, temperature=0)).text == local.text
    # Its health: no /health, but it lists its models.
    assert "lists its models" in remote.check(MODEL.key)
    with pytest.raises(ModelUnavailable, match="401"):
        RemoteEngine(base_url=f"{url}/v1", api_key="sk-store-wrong").generate(chat(MODEL, max_tokens=1))

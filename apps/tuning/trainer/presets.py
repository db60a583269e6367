"""The sizes of a model pre-trained from scratch (method `scratch`). Plain Python (no torch): the job service, the
customize page's estimate and the trainer read them.

With the base tokenizer (49,152 tokens) the tied embedding is most of a small model: `tiny` is 49,152 x 192 = 9.4 M
embedding + 4 layers of 0.41 M = 11.1 M parameters (3.2 M with its 8,192-token BPE).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    context: int
    bpe_vocab: int  # the vocabulary of a tokenizer trained on the data (`tokenizer="bpe"`)
    # Training tokens a second on the development machine (2 CPU cores, float32, base tokenizer): the estimate.
    cpu_tokens_per_second: int
    # The peak learning rate (after warm-up, before the cosine decay): the smaller the model, the larger the rate.
    learning_rate: float
    gpu_only: bool = False  # refused where no GPU worker runs (settings.FINETUNE_GPU_WORKER)


PRESETS = {
    "micro": Preset(hidden=32, layers=2, heads=2, kv_heads=1, ffn=64, context=64, bpe_vocab=512,
                    cpu_tokens_per_second=6000, learning_rate=1e-2),  # for tests: trains in seconds
    "tiny": Preset(hidden=192, layers=4, heads=4, kv_heads=2, ffn=512, context=256, bpe_vocab=8192,
                   cpu_tokens_per_second=700, learning_rate=3e-3),
    "small": Preset(hidden=512, layers=8, heads=8, kv_heads=4, ffn=1408, context=512, bpe_vocab=16384,
                    cpu_tokens_per_second=150, learning_rate=1e-3, gpu_only=True),
    "base": Preset(hidden=768, layers=12, heads=12, kv_heads=4, ffn=2048, context=1024, bpe_vocab=32768,
                   cpu_tokens_per_second=40, learning_rate=6e-4, gpu_only=True),
}
DEFAULT_PRESET = "tiny"
TOKENIZERS = ("base", "bpe")  # the base model's tokenizer, or a byte-level BPE trained on the uploaded text
BASE_VOCAB = 49152  # the base model's vocabulary (SmolLM2): for the parameter count shown before a job starts


def parameter_count(name: str, vocab_size: int = BASE_VOCAB) -> int:
    """Parameters of a preset's model with this vocabulary (embeddings tied to the output layer)."""
    p = PRESETS[name]
    head = p.hidden // p.heads
    attention = 2 * p.hidden * p.hidden + 2 * p.hidden * head * p.kv_heads
    layer = attention + 3 * p.hidden * p.ffn + 2 * p.hidden
    return vocab_size * p.hidden + p.layers * layer + p.hidden


def perplexity(loss: float) -> float:
    """exp(loss), capped where it would overflow (an untrained model's loss is about ln(vocabulary))."""
    return math.exp(min(loss, 80.0))

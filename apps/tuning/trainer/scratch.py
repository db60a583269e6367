"""Pre-training a small GPT from scratch (method `scratch`): a decoder-only Llama (`LlamaConfig` +
`LlamaForCausalLM`) with a random initialisation, sized by a preset, trained by autoregressive language modelling
on plain text.

- Tokenizer: the base model's (`tokenizer="base"`, the default: every engine serves the result, llama.cpp
  included) without its chat template (the result is a plain language model), or a new byte-level BPE trained
  on the uploaded text with `tokenizers` (`tokenizer="bpe"`: a smaller vocabulary, so more of a small model's
  parameters are in its layers; such a model serves on the transformers engine only, since its GGUF export
  refuses a tokenizer that is not the base's).
- Data: every paragraph tokenized and ended with the end-of-text token, then packed into full `context`-long
  blocks (no padding). The held-out part is the validation file when there is one, otherwise the last
  HELD_OUT_FRACTION of the blocks.
- Training: Hugging Face's Trainer: AdamW (betas 0.9/0.95, weight decay 0.1), linear warm-up then cosine decay,
  gradient clipping at 1.0, checkpoints every `save_steps` that resume (weights, optimizer, scheduler, RNG, step;
  the trained tokenizer is saved in the work folder first, so a resumed run uses the same one), and the held-out
  loss (perplexity = exp(loss)) before training and at each checkpoint.

Presets `small` and `base` are meant for a CUDA GPU; the job service refuses them where no GPU worker runs.
No Django here.
"""

from __future__ import annotations

from pathlib import Path

import torch
from datasets import Dataset
from transformers import (
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Trainer,
    TrainingArguments,
    default_data_collator,
    set_seed,
)
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from apps.tuning.trainer.data import validate_file
from apps.tuning.trainer.presets import PRESETS, Preset

EOS = "<|endoftext|>"  # the new tokenizer's only special token: it ends each paragraph (and is its BOS and pad)
HELD_OUT_FRACTION = 0.05
MIN_TRAIN_BLOCKS = 2


def llama_config(preset: Preset, *, vocab_size: int, bos_id: int | None, eos_id: int | None) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=preset.hidden, intermediate_size=preset.ffn,
        num_hidden_layers=preset.layers, num_attention_heads=preset.heads, num_key_value_heads=preset.kv_heads,
        max_position_embeddings=preset.context, rms_norm_eps=1e-5, rope_theta=10000.0,
        tie_word_embeddings=True,  # the embedding is the largest matrix of a small model: one copy, not two
        bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=eos_id,
    )


def _paragraphs(path: str) -> list[str]:
    report = validate_file(Path(path), expected="text", min_examples=1)
    if not report.ok:
        raise ValueError(f"{path}: " + "; ".join(str(p) for p in report.problems[:5]))
    return [e["text"] for e in report.examples]


def scratch_tokenizer(config, texts: list[str], preset: Preset) -> PreTrainedTokenizerFast:
    """The run's tokenizer: saved in the work folder the first time, read from there when the run resumes."""
    saved = Path(config.work_dir) / "tokenizer"
    if (saved / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(saved)
    if config.tokenizer == "bpe":
        from tokenizers import ByteLevelBPETokenizer

        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(texts, vocab_size=preset.bpe_vocab, min_frequency=2, special_tokens=[EOS])
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token=EOS, eos_token=EOS, pad_token=EOS,
                                            model_max_length=preset.context)
    else:
        tokenizer = AutoTokenizer.from_pretrained(config.base_model)
        tokenizer.chat_template = None  # a plain language model: no chat template, whatever the base's was
        tokenizer.model_max_length = preset.context
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    saved.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(saved)
    return tokenizer


def pack(texts: list[str], tokenizer, context: int) -> list[list[int]]:
    """Each paragraph's tokens followed by the end-of-text token, concatenated and cut into `context`-long blocks
    (the last partial block is dropped: no padding, every position is trained on)."""
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        stream.append(eos)
    return [stream[i:i + context] for i in range(0, len(stream) - context + 1, context)]


def split_blocks(train: list[list[int]], held_out: list[list[int]] | None) -> tuple[list, list]:
    """Training and held-out blocks: the validation file's, or the last HELD_OUT_FRACTION of the training text's."""
    if held_out:
        return train, held_out
    n = max(1, round(len(train) * HELD_OUT_FRACTION))
    return train[:-n], train[-n:]


def _dataset(blocks: list[list[int]]) -> Dataset:
    return Dataset.from_dict({"input_ids": blocks, "labels": blocks})


def scratch_setup(config, reporter, bridge_class, shared_arguments: dict):
    """The Trainer ready to pre-train, and its bridge to the reporter (train.py's `setup` for method `scratch`, which
    passes its callback class and the Trainer settings every method shares: this module is imported by train.py)."""
    preset = PRESETS[config.preset]
    if preset.gpu_only and not torch.cuda.is_available():
        raise RuntimeError(f"the {config.preset} preset needs a CUDA GPU")
    set_seed(config.seed)
    texts = _paragraphs(config.train_file)
    tokenizer = scratch_tokenizer(config, texts, preset)
    train_blocks = pack(texts, tokenizer, preset.context)
    held_blocks = pack(_paragraphs(config.validation_file), tokenizer, preset.context) if config.validation_file else None
    train_blocks, held_blocks = split_blocks(train_blocks, held_blocks)
    if len(train_blocks) < MIN_TRAIN_BLOCKS or not held_blocks:
        raise ValueError(f"the text is too short for the {config.preset} preset: it makes {len(train_blocks)} training "
                         f"block(s) of {preset.context} tokens")
    model = LlamaForCausalLM(llama_config(preset, vocab_size=len(tokenizer), bos_id=tokenizer.bos_token_id,
                                          eos_id=tokenizer.eos_token_id))
    model.generation_config.pad_token_id = tokenizer.eos_token_id
    bridge = bridge_class(reporter, config)
    trainer = Trainer(
        model=model,
        args=_arguments(config, shared_arguments),
        train_dataset=_dataset(train_blocks),
        eval_dataset=_dataset(held_blocks),
        processing_class=tokenizer,
        data_collator=default_data_collator,
        callbacks=[bridge],
    )
    for noisy in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(noisy)
    return trainer, bridge


def _arguments(config, shared: dict) -> TrainingArguments:
    """The settings every method shares (train.py's `shared_arguments`), with pre-training's own: AdamW's betas and
    weight decay, clipping, cosine decay, and the held-out loss at each checkpoint."""
    return TrainingArguments(
        **shared,
        per_device_eval_batch_size=config.batch_size,
        weight_decay=0.1,
        adam_beta1=0.9,
        adam_beta2=0.95,
        max_grad_norm=1.0,
        lr_scheduler_type="cosine",
        eval_strategy="steps",
        eval_steps=config.eval_steps or config.save_steps,
        prediction_loss_only=True,
    )

"""The evaluation gate's measurements, made in the trainer's process (no Django).

- A held-out split: a job without a validation file keeps about a tenth of its training examples aside (at least
  HOLDOUT_MIN, seeded by the job's seed, so a resumed attempt holds out the same ones); a file that would keep
  fewer than MIN_EXAMPLES to train on is not split (it trains on all, and the job says so).
- On that split (or the validation file): the base model's and the tuned model's validation loss, the loss of the
  version `latest` names today (the gate compares with it on the same data), and, for chat and prompt/completion
  data, an exact-match score: the share of held-out prompts whose greedy answer is the expected one, whitespace
  normalised. The first PAIRS_KEPT answers of both models are kept side by side.

The base's figures are measured before training and kept in `work_dir/evaluation-before.json`, so a resumed
attempt (whose model is no longer the base) still has them.
"""

from __future__ import annotations

import gc
import json
import math
from pathlib import Path

import torch
from transformers import AutoTokenizer

from apps.inference.loading import adapter_tokenizer_path, load_chain
from apps.tuning.trainer.data import HOLDOUT_MIN, holdout_size, holdout_split  # noqa: F401  (the split: torch-free, in data.py)

# Greedy answers per model: one batch each, a few dozen tokens, so the gate adds seconds, not minutes, to a job.
EXACT_MATCH_MAX = 10
PAIRS_KEPT = 5
MAX_NEW_TOKENS = 48
BEFORE_FILE = "evaluation-before.json"


def prompts_of(examples: list[dict]) -> list[dict]:
    """The held-out prompts with their expected answers: a chat's turns before its last assistant message (shown
    as its last user message), or a completion's prompt. Plain text (continued pre-training) has none."""
    prompts = []
    for example in examples:
        if "messages" in example:
            messages = example["messages"]
            last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
            users = [m["content"] for m in messages[:last] if m["role"] == "user"]
            if users:
                prompts.append({"input": messages[:last], "prompt": users[-1], "expected": messages[last]["content"]})
        elif isinstance(example.get("prompt"), str) and isinstance(example.get("completion"), str):
            prompts.append({"input": example["prompt"], "prompt": example["prompt"], "expected": example["completion"]})
    return prompts[:EXACT_MATCH_MAX]


def normalise(text: str) -> str:
    return " ".join(text.split())


def exact_match(answers: list[str], prompts: list[dict]) -> float | None:
    if not prompts:
        return None
    return sum(normalise(a) == normalise(p["expected"]) for a, p in zip(answers, prompts, strict=True)) / len(prompts)


@torch.no_grad()
def greedy_answers(model, tokenizer, prompts: list[dict]) -> list[str]:
    """The model's greedy answers to the prompts, in one left-padded batch."""
    if not prompts:
        return []
    chat = isinstance(prompts[0]["input"], list)
    texts = [tokenizer.apply_chat_template(p["input"], tokenize=False, add_generation_prompt=True) if chat else p["input"]
             for p in prompts]
    longest = max(len(tokenizer(p["expected"], add_special_tokens=False).input_ids) for p in prompts)
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not chat)
    finally:
        tokenizer.padding_side = side
    device = next(model.parameters()).device
    training = model.training
    model.eval()
    try:
        out = model.generate(
            input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device), do_sample=False,
            max_new_tokens=min(MAX_NEW_TOKENS, longest + 4),  # room to end the answer, not to ramble on
            use_cache=True,  # off in the config for gradient checkpointing; without it each token re-reads the prompt
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        )
    finally:
        model.train(training)
    start = batch.input_ids.shape[1]
    # NUL: a random model may emit its byte token, and PostgreSQL stores no NUL in text or JSON.
    return [tokenizer.decode(row[start:], skip_special_tokens=True).replace("\x00", "").strip() for row in out]


def eval_loss(trainer) -> float | None:
    """The validation loss; None when it is not a number (a diverged model: JSON, and so PostgreSQL, has no NaN)."""
    loss = float(trainer.evaluate()["eval_loss"])
    return loss if math.isfinite(loss) else None


def other_model_loss(trainer, *, model_path: str, adapters: list[str], examples: list[dict], make_trainer) -> float | None:
    """The validation loss of another model (the version `latest` names) on the same examples, computed exactly as
    the job's own (same arguments, its own tokenizer). `make_trainer(model, tokenizer, examples)` builds the
    evaluation-only trainer."""
    tokenizer = AutoTokenizer.from_pretrained(adapter_tokenizer_path(model_path, adapters[-1]) if adapters else model_path)
    model = load_chain(model_path, adapters, dtype=torch.float32)
    try:
        return eval_loss(make_trainer(model, tokenizer, examples))
    finally:
        del model
        gc.collect()


def before_training(trainer, *, work_dir: str, held: list[dict], source: str, seed: int, resume: str | None,
                    current: dict | None, make_trainer) -> dict:
    """The base's loss and answers (and the current `latest` version's loss), measured once, before training."""
    path = Path(work_dir) / BEFORE_FILE
    if resume is not None and path.is_file():
        return json.loads(path.read_text())
    if not held:
        before = {"split": {"source": "none", "examples": 0, "seed": seed}}
    else:
        prompts = prompts_of(held)
        answers = greedy_answers(trainer.model, trainer.processing_class, prompts)
        before = {
            "split": {"source": source, "examples": len(held), "seed": seed},
            "base": {"loss": eval_loss(trainer), "exact_match": exact_match(answers, prompts)},
            "exact_match_items": len(prompts),
            "base_answers": answers,
        }
        if current:
            before["current"] = {"reference": current["reference"], "loss": None}
            try:
                before["current"]["loss"] = other_model_loss(
                    trainer, model_path=current["model"], adapters=current.get("adapters") or [], examples=held,
                    make_trainer=make_trainer)
            except (OSError, ValueError, RuntimeError) as exc:  # the gate then keeps the new version a candidate
                before["current"]["error"] = f"{type(exc).__name__}: {exc}"[:300]
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(before))
    return before


def after_training(trainer, *, before: dict, held: list[dict], tuned_loss: float | None) -> dict:
    """Base against tuned on the same held-out data: losses, exact match, the first answer pairs."""
    evaluation = {k: v for k, v in before.items() if k != "base_answers"}
    if not held:
        return evaluation
    prompts = prompts_of(held)
    answers = greedy_answers(trainer.model, trainer.processing_class, prompts)
    tuned_loss = tuned_loss if tuned_loss is not None and math.isfinite(tuned_loss) else None
    evaluation["tuned"] = {"loss": tuned_loss, "exact_match": exact_match(answers, prompts)}
    base_answers = before.get("base_answers") or [""] * len(prompts)
    evaluation["pairs"] = [
        {"prompt": p["prompt"], "expected": p["expected"], "base": b, "tuned": t}
        for p, b, t in list(zip(prompts, base_answers, answers, strict=False))[:PAIRS_KEPT]
    ]
    return evaluation

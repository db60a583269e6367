"""Method `classification`: a sequence-classification head on the base model (GPT's second stage, a task head).

`AutoModelForSequenceClassification` for the base's architecture takes the base's weights (the head is new, one
output per label of the training file, in the order the labels first appear); the head trains fully and the body
with a LoRA adapter (`classifier_body="lora"`, PEFT's SEQ_CLS task keeps the head in `modules_to_save`) or fully
(`"full"`). The tokenizer gets a pad token where it has none (its end-of-sequence token), and the model's config
its id. Without a validation file a tenth of each label's examples (at least one) is held out. Accuracy and each
label's F1 on the validation split are reported at the end of every epoch, and at the end.

The result is one folder of full weights (a LoRA body merged in) with `id2label`/`label2id` in its config, which
plain `AutoModelForSequenceClassification.from_pretrained(folder)` loads; safetensors only. No kept epoch models:
a classifier's checkpoints are for resuming only.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from apps.inference.loading import adapter_tokenizer_path, load_chain
from apps.tuning.trainer.data import label_counts, validate_file
from apps.tuning.trainer.train import (
    ReporterCallback,
    Reporter,
    TrainConfig,
    TrainResult,
    fit,
    last_checkpoint,
    shared_arguments,
)

HELD_OUT = 0.1  # of each label's examples, when there is no validation file


def run_classification(config: TrainConfig, reporter: Reporter) -> TrainResult:
    """Set up, fit, save: the classification counterpart of `run_training` (which calls it for this method)."""
    resume = last_checkpoint(config.work_dir)
    trainer, bridge = setup(config, reporter)
    result = fit(trainer, bridge, resume=resume)
    if result.status == "completed":
        save(trainer, config, result)
    return result


def splits(config: TrainConfig) -> tuple[list[dict], list[dict]]:
    """The training and validation examples ({"text", "label"}): the validation file's, or a tenth of each label's
    training examples held out (chosen with the job's seed)."""
    train = _examples(config.train_file, training=True)
    if config.validation_file:
        return train, _examples(config.validation_file, training=False)
    rng = random.Random(config.seed)
    by_label: dict[str, list[dict]] = {}
    for example in train:
        by_label.setdefault(example["label"], []).append(example)
    kept, held = [], []
    for examples in by_label.values():
        rng.shuffle(examples)
        n = max(1, round(len(examples) * HELD_OUT))
        held += examples[:n]
        kept += examples[n:]
    rng.shuffle(kept)
    return kept, held


def _examples(path: str, *, training: bool) -> list[dict]:
    report = validate_file(Path(path), expected="classification", min_examples=1, training_labels=training)
    if not report.ok:
        raise ValueError(f"{path}: " + "; ".join(str(p) for p in report.problems[:5]))
    return [{"text": e["text"], "label": e["label"]} for e in report.examples]


def load_classifier(config: TrainConfig, labels: list[str], tokenizer) -> torch.nn.Module:
    """The base's weights (its adapter chain merged) under a new classification head of `len(labels)` outputs."""
    causal = load_chain(config.base_model, config.base_adapters, dtype=torch.float32)
    model_config = causal.config
    model_config.num_labels = len(labels)
    model_config.id2label = dict(enumerate(labels))
    model_config.label2id = {label: i for i, label in enumerate(labels)}
    model_config.pad_token_id = tokenizer.pad_token_id
    model_config.use_cache = False
    model = AutoModelForSequenceClassification.from_config(model_config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(causal.state_dict(), strict=False)
    head = {name for name, _ in model.named_parameters() if not name.startswith(model.base_model_prefix + ".")}
    if set(missing) - head:  # the body must come whole from the base: only the new head starts random
        raise ValueError(f"the base's weights do not fit a classification model: missing {sorted(set(missing) - head)[:5]}")
    return model


def setup(config: TrainConfig, reporter: Reporter) -> tuple[Trainer, ReporterCallback]:
    parent = config.base_adapters[-1] if config.base_adapters else None
    tokenizer = AutoTokenizer.from_pretrained(adapter_tokenizer_path(config.base_model, parent) if parent else config.base_model)
    if tokenizer.pad_token is None:  # Llama tokenizers have none: batches are padded with end-of-sequence tokens
        tokenizer.pad_token = tokenizer.eos_token
    train, validation = splits(config)
    labels = list(label_counts(train))
    unknown = sorted({e["label"] for e in validation} - set(labels))
    if unknown:
        raise ValueError(f"the validation file has labels the training file lacks: {', '.join(map(repr, unknown[:10]))}")
    model = load_classifier(config, labels, tokenizer)
    if config.classifier_body == "lora":
        model = get_peft_model(model, LoraConfig(
            task_type="SEQ_CLS", r=config.lora_rank, lora_alpha=config.lora_alpha, target_modules="all-linear",
            lora_dropout=0.0,
        ))
    label2id = model.config.label2id

    def encode(rows: list[dict]) -> Dataset:
        encoded = tokenizer([r["text"] for r in rows], truncation=True, max_length=config.max_length)
        return Dataset.from_dict({**encoded, "labels": [label2id[r["label"]] for r in rows]})

    bridge = ReporterCallback(reporter, None)  # no kept epoch models: a classifier's checkpoints only resume
    trainer = Trainer(
        model=model,
        args=_arguments(config),
        train_dataset=encode(train),
        eval_dataset=encode(validation),
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=label_metrics(labels),
        callbacks=[bridge],
    )
    for noisy in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(noisy)
    return trainer, bridge


def _arguments(config: TrainConfig) -> TrainingArguments:
    return TrainingArguments(
        **shared_arguments(config),
        per_device_eval_batch_size=max(config.batch_size, 16),  # no gradients: a larger batch is cheap
        lr_scheduler_type="linear",
        eval_strategy="epoch",  # accuracy and each label's F1 at the end of every epoch
        remove_unused_columns=False,  # the encoded columns are the model's inputs already
    )


def label_metrics(labels: list[str]):
    """Accuracy, each label's F1 (`f1[<label>]`, for labels in the validation split or predicted) and their mean."""

    def compute(prediction) -> dict:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        predicted, truth = np.asarray(logits).argmax(-1), np.asarray(prediction.label_ids)
        metrics = {"accuracy": float((predicted == truth).mean())}
        f1s = []
        for i, label in enumerate(labels):
            tp = int(((predicted == i) & (truth == i)).sum())
            wrong = int(((predicted == i) & (truth != i)).sum()) + int(((predicted != i) & (truth == i)).sum())
            if tp + wrong:  # a label neither present nor predicted has no F1
                f1s.append(2 * tp / (2 * tp + wrong))
                metrics[f"f1[{label}]"] = f1s[-1]
        metrics["macro_f1"] = float(np.mean(f1s)) if f1s else 0.0
        return metrics

    return compute


def save(trainer: Trainer, config: TrainConfig, result: TrainResult) -> None:
    """Full weights (a LoRA body merged, the trained head in place), config with the labels, and the tokenizer."""
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = trainer.model
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.config.use_cache = True
    model.save_pretrained(out, safe_serialization=True)
    trainer.processing_class.save_pretrained(out)
    result.output_dir = str(out)

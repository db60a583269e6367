"""One entry function: `run_training(config, reporter)`. TRL's SFTTrainer, PEFT's LoRA, HF checkpoints.

Methods: `lora` (default: a LoRA adapter on every linear layer), `full` (all weights), `pretrain` (continued
pre-training on plain text, packed into full-length sequences, with a LoRA adapter so that it runs on a CPU).
Checkpoints every `save_steps` hold the weights or adapter, optimizer, scheduler, RNG states and the step: a run
started again with the same `work_dir` resumes from the last one instead of starting over.

Kept checkpoints (OpenAI's): with `kept_dir`, the model at the end of each epoch is also exported there as a folder
the registry takes as it is (`step-<N>/`: safetensors, configs and tokenizer, no pickle) beside its metrics
(`step-<N>.json`), and only the last `keep_checkpoints` epochs stay. They live beside the resume checkpoints, so a
resumed run keeps those of its earlier attempts.

The base may be a LoRA fine-tune: `base_adapters` are merged onto `base_model` in order before training (a
fine-tune of a fine-tune starts from its parent's merged weights).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoTokenizer, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback
from transformers.trainer_utils import get_last_checkpoint
from trl import SFTConfig, SFTTrainer

from apps.inference.loading import adapter_tokenizer_path, load_chain
from apps.tuning.hyperparameters import (
    BASE_LEARNING_RATE,
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_LORA_RANK,
)
from apps.tuning.trainer import evaluation
from apps.tuning.trainer.data import classifier_metrics, validate_file
from apps.tuning.trainer.presets import DEFAULT_PRESET, TOKENIZERS, perplexity
from apps.tuning.trainer.scratch import scratch_setup


@dataclass
class TrainConfig:
    base_model: str  # a folder that from_pretrained loads (a registry version)
    train_file: str
    output_dir: str  # the finished model: adapter (lora, pretrain) or full weights
    work_dir: str  # checkpoints: work_dir/checkpoint-<step>
    method: Literal["lora", "full", "pretrain", "scratch", "classification"] = "lora"
    validation_file: str | None = None
    base_model_id: str | None = None  # written into the adapter's config: its base by registry reference, `<id>@v<N>`
    base_adapters: list[str] = field(default_factory=list)  # merged onto base_model in order (a LoRA parent's chain)
    kept_dir: str | None = None  # where the last epochs' models are kept (None: none kept)
    keep_checkpoints: int = 3  # OpenAI keeps the checkpoints of the last three epochs
    n_epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    learning_rate: float | None = None  # None: the method's base rate (apps/tuning/hyperparameters.py)
    lora_rank: int = DEFAULT_LORA_RANK
    lora_alpha: int = 2 * DEFAULT_LORA_RANK
    max_length: int = 512
    seed: int = 42
    save_steps: int = 10
    eval_steps: int | None = None  # None: at each save
    warmup_ratio: float = 0.05
    max_steps: int | None = None  # stop after this many steps whatever n_epochs says (benchmarks, smoke runs)
    classifier_body: Literal["lora", "full"] = "lora"  # method classification (trainer/classify.py): how the body trains
    # The evaluation gate's other side: the version `latest` names today, measured on this job's held-out data
    # ({"reference": "<id>@v<N>", "model": its root's folder, "adapters": [folders merged onto it]}), or None.
    compare: dict | None = None
    # Method `scratch` (trainer/scratch.py): the model's size, and whose tokenizer ("base": base_model's; "bpe": new).
    preset: str = DEFAULT_PRESET
    tokenizer: Literal["base", "bpe"] = TOKENIZERS[0]

    @property
    def effective_learning_rate(self) -> float:
        return self.learning_rate if self.learning_rate is not None else BASE_LEARNING_RATE[self.method]

    @property
    def trains_adapter(self) -> bool:
        return self.method in ("lora", "pretrain")


@dataclass
class TrainResult:
    status: Literal["completed", "stopped"]
    steps: int
    total_steps: int
    train_loss: float | None = None
    val_loss_before: float | None = None
    val_loss_after: float | None = None
    resumed_from_step: int = 0
    tokens_seen: int = 0
    output_dir: str | None = None
    history: list[dict] = field(default_factory=list)
    kept_checkpoints: list[dict] = field(default_factory=list)  # {"step", "epoch", "path", "metrics"}, oldest first
    # A classifier's last evaluation: valid_accuracy, valid_macro_f1, valid_f1 ({label: F1}).
    eval_metrics: dict = field(default_factory=dict)
    evaluation: dict = field(default_factory=dict)  # base against tuned on the held-out data (trainer/evaluation.py)


class Reporter(Protocol):
    def on_start(self, *, total_steps: int, resumed_from_step: int) -> None: ...

    def on_step(self, *, step: int, total_steps: int, metrics: dict) -> None: ...

    def on_checkpoint(self, *, step: int, path: str) -> None: ...

    # Optional: a reporter without it is not told (kept checkpoints are still written to `kept_dir`).
    def on_kept_checkpoint(self, *, step: int, epoch: int, metrics: dict, kept_steps: list[int]) -> None: ...

    def should_stop(self) -> bool: ...


class PrintReporter:
    """For the command line: one line per logged step."""

    def on_start(self, *, total_steps, resumed_from_step):
        print(f"training: {total_steps} steps" + (f", resuming at step {resumed_from_step}" if resumed_from_step else ""))

    def on_step(self, *, step, total_steps, metrics):
        print(f"step {step}/{total_steps} " + " ".join(f"{k}={v:.4g}" for k, v in metrics.items()), flush=True)

    def on_checkpoint(self, *, step, path):
        print(f"checkpoint at step {step}: {path}")

    def on_kept_checkpoint(self, *, step, epoch, metrics, kept_steps):
        print(f"kept the model of epoch {epoch} (step {step}); kept: {kept_steps}")

    def should_stop(self):
        return False


def run_training(config: TrainConfig, reporter: Reporter | None = None) -> TrainResult:
    """Set up, fit, save. A run with a checkpoint in `config.work_dir` resumes from it."""
    if config.method == "classification":
        # Not a cycle at import time: classify builds on this module's callback, fit and result.
        from apps.tuning.trainer.classify import run_classification

        return run_classification(config, reporter or PrintReporter())
    trainer, bridge, resume = setup(config, reporter or PrintReporter())
    before = evaluation.before_training(
        trainer, work_dir=config.work_dir, held=bridge.held_out, source=bridge.held_source, seed=config.seed,
        resume=resume, current=config.compare,
        make_trainer=lambda model, tokenizer, examples: _evaluation_trainer(config, model, tokenizer, examples),
    )
    result = fit(trainer, bridge, resume=resume, val_before=(before.get("base") or {}).get("loss"))
    if result.status == "completed":
        result.evaluation = evaluation.after_training(trainer, before=before, held=bridge.held_out,
                                                      tuned_loss=result.val_loss_after)
        save(trainer, config, result)
        result.kept_checkpoints = kept_checkpoints(config.kept_dir)
    return result


# --- Setup: model, data, arguments, the reporter's bridge ------------------------------------------------------
def setup(config: TrainConfig, reporter: Reporter) -> tuple[SFTTrainer, ReporterCallback, str | None]:
    """The trainer ready to train, its bridge to the reporter, and the checkpoint to resume from (None: a fresh start)."""
    resume = last_checkpoint(config.work_dir)
    if config.method == "scratch":  # a new model from a preset, not the base's weights
        trainer, bridge = scratch_setup(config, reporter, ReporterCallback, shared_arguments(config))
        return trainer, bridge, resume
    bridge = ReporterCallback(reporter, config)
    parent = config.base_adapters[-1] if config.base_adapters else None
    tokenizer = AutoTokenizer.from_pretrained(adapter_tokenizer_path(config.base_model, parent) if parent else config.base_model)
    model = load_chain(config.base_model, config.base_adapters, dtype=torch.float32)
    train = _examples(config.train_file, config.method)
    if config.validation_file:
        bridge.held_out, bridge.held_source = _examples(config.validation_file, config.method), "validation_file"
    else:  # no validation file: a seeded tenth of the training examples is held out (trainer/evaluation.py)
        train, bridge.held_out = evaluation.holdout_split(train, seed=config.seed)
        bridge.held_source = "held_out"
    validation = Dataset.from_list(bridge.held_out) if bridge.held_out else None
    trainer = SFTTrainer(
        model=model,
        args=_arguments(config, validation=validation is not None),
        train_dataset=Dataset.from_list(train),
        eval_dataset=validation,
        processing_class=tokenizer,
        peft_config=_lora(config),
        callbacks=[bridge],
    )
    for noisy in (PrinterCallback, ProgressCallback):  # progress goes to the reporter, not to stdout
        trainer.remove_callback(noisy)
    return trainer, bridge, resume


def _examples(path: str, method: str) -> list[dict]:
    report = validate_file(Path(path), expected="text" if method == "pretrain" else None, min_examples=1)
    if not report.ok:
        raise ValueError(f"{path}: " + "; ".join(str(p) for p in report.problems[:5]))
    return report.examples


def _evaluation_trainer(config: TrainConfig, model, tokenizer, examples: list[dict]) -> SFTTrainer:
    """A trainer that only evaluates another model on `examples`, with the job's own arguments (same loss)."""
    data = Dataset.from_list(examples)  # TRL asks for a training set too: the same few examples, never trained on
    return SFTTrainer(model=model, args=_arguments(config, validation=True), train_dataset=data, eval_dataset=data,
                      processing_class=tokenizer)


def shared_arguments(config: TrainConfig) -> dict:
    """The Trainer settings every method shares: where checkpoints go and how often, epochs or steps, batch size,
    learning rate and warm-up, logging every step (the reporter's curve), the seed, and the device."""
    cuda = torch.cuda.is_available()
    return {
        "output_dir": config.work_dir,
        "num_train_epochs": config.n_epochs,
        "max_steps": config.max_steps or -1,
        "per_device_train_batch_size": config.batch_size,
        "learning_rate": config.effective_learning_rate,
        "warmup_steps": config.warmup_ratio,  # a fraction below 1 is a ratio of all steps (transformers 5)
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "save_total_limit": 2,
        "seed": config.seed,
        "data_seed": config.seed,
        "bf16": cuda,  # bfloat16 autocast on CUDA; float32 on the CPU
        "use_cpu": not cuda,
        "report_to": [],
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "include_num_input_tokens_seen": "all",
    }


def _arguments(config: TrainConfig, *, validation: bool) -> SFTConfig:
    return SFTConfig(
        **shared_arguments(config),
        per_device_eval_batch_size=config.batch_size,
        lr_scheduler_type="linear",
        eval_strategy="steps" if validation else "no",
        eval_steps=config.eval_steps or config.save_steps,
        max_length=config.max_length,
        packing=config.method == "pretrain",
        dataset_text_field="text",
    )


def _lora(config: TrainConfig) -> LoraConfig | None:
    """A LoRA adapter on every linear layer (lora, pretrain); None for full fine-tuning."""
    if not config.trains_adapter:
        return None
    return LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, target_modules="all-linear", lora_dropout=0.0,
                      task_type="CAUSAL_LM")


def last_checkpoint(work_dir: str) -> str | None:
    return get_last_checkpoint(work_dir) if Path(work_dir).is_dir() else None


# Logged metrics the reporter gets (TRL logs the mean token accuracy of each step, and of each evaluation).
LOGGED = ("loss", "learning_rate", "eval_loss", "grad_norm", "mean_token_accuracy", "eval_mean_token_accuracy")
CLASSIFIER_LOGGED = ("eval_accuracy", "eval_macro_f1", "eval_f1[")  # a classifier's evaluation (trainer/classify.py)


class ReporterCallback(TrainerCallback):
    """The bridge from the Trainer's events to a Reporter: steps with their metrics, checkpoints, stop requests; and
    the keeper of the last epochs' models (`config.kept_dir`)."""

    def __init__(self, reporter: Reporter, config: TrainConfig | None = None):
        self.reporter, self.config = reporter, config
        self.history: list[dict] = []
        self.started, self.tokens_at_start = time.monotonic(), 0
        self.epoch_end_step: int | None = None  # an epoch ended at this step: its save is to be kept
        self.saved_step = -1
        # The examples evaluated on (the validation file's, or those held out of the training file) and which.
        self.held_out: list[dict] = []
        self.held_source = ""

    def on_train_begin(self, args, state, control, **kwargs):
        self.started, self.tokens_at_start = time.monotonic(), state.num_input_tokens_seen
        self.reporter.on_start(total_steps=state.max_steps, resumed_from_step=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        metrics = {k: float(v) for k, v in logs.items() if k in LOGGED or k.startswith(CLASSIFIER_LOGGED)}
        language_model = not any(k.startswith(CLASSIFIER_LOGGED) for k in metrics)  # a classifier's loss is over labels
        if "eval_loss" in metrics and language_model:  # held-out perplexity: what a language model's quality is read as
            metrics["eval_perplexity"] = perplexity(metrics["eval_loss"])
        elapsed = time.monotonic() - self.started
        if elapsed > 0 and "loss" in logs:
            metrics["tokens_per_second"] = (state.num_input_tokens_seen - self.tokens_at_start) / elapsed
        if metrics:
            self.history.append({"step": state.global_step, **metrics})
            self.reporter.on_step(step=state.global_step, total_steps=state.max_steps, metrics=metrics)

    def on_step_end(self, args, state, control, **kwargs):
        if self.reporter.should_stop():
            control.should_training_stop = True
            control.should_save = False

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.config is None or not self.config.kept_dir:
            return
        if control.should_training_stop and state.global_step < state.max_steps:
            return  # stopped (cancelled, over time): nothing to keep
        self.epoch_end_step = state.global_step
        evaluates = args.eval_strategy != "no"
        evaluated = any(h["step"] == state.global_step and "eval_loss" in h for h in self.history)
        if self.saved_step == state.global_step and (evaluated or not evaluates):  # saved (and evaluated) already
            self._keep(Path(args.output_dir) / f"checkpoint-{state.global_step}", state)
            return
        control.should_save = True  # the Trainer saves next, after evaluating: on_save keeps it
        control.should_evaluate = evaluates

    def on_save(self, args, state, control, **kwargs):
        path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        self.saved_step = state.global_step
        self.reporter.on_checkpoint(step=state.global_step, path=str(path))
        if self.epoch_end_step == state.global_step:
            self._keep(path, state)

    def _keep(self, checkpoint: Path, state) -> None:
        """Export the epoch's model from its checkpoint into `kept_dir`, then drop all but the last few epochs."""
        self.epoch_end_step = None
        step, epoch = state.global_step, round(state.epoch or 0)
        at_step = [h for h in self.history if h["step"] == step]
        metrics = {"step": step}
        for name, key in (("train_loss", "loss"), ("train_mean_token_accuracy", "mean_token_accuracy"),
                          ("full_valid_loss", "eval_loss"), ("full_valid_mean_token_accuracy", "eval_mean_token_accuracy")):
            values = [h[key] for h in at_step if key in h]
            if values:
                metrics[name] = values[-1]
        if "full_valid_loss" in metrics:  # evaluated on the whole validation file: OpenAI's valid_loss too
            metrics["valid_loss"] = metrics["full_valid_loss"]
        kept_steps = keep_export(checkpoint, Path(self.config.kept_dir), step=step, epoch=epoch, metrics=metrics,
                                 base_model_id=self.config.base_model_id, keep=self.config.keep_checkpoints)
        on_kept = getattr(self.reporter, "on_kept_checkpoint", None)
        if on_kept is not None:
            on_kept(step=step, epoch=epoch, metrics=metrics, kept_steps=kept_steps)


# Files of a Trainer checkpoint that only resuming needs (pickles among them): never part of a kept model.
RESUME_ONLY = {"trainer_state.json", "training_args.bin", "optimizer.pt", "scheduler.pt", "scaler.pt"}


def keep_export(checkpoint: Path, kept_dir: Path, *, step: int, epoch: int, metrics: dict, base_model_id: str | None,
                keep: int) -> list[int]:
    """Copy a checkpoint's model (safetensors, configs, tokenizer) to `kept_dir/step-<N>/` with its metrics in
    `step-<N>.json`, then remove all but the last `keep`. Returns the kept steps, oldest first."""
    kept_dir.mkdir(parents=True, exist_ok=True)
    staging, final = kept_dir / f".step-{step}", kept_dir / f"step-{step}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for f in checkpoint.iterdir():
        if f.is_file() and f.name not in RESUME_ONLY and f.suffix not in (".pt", ".pth", ".bin"):
            shutil.copy2(f, staging / f.name)
    _name_adapter_base(staging, base_model_id)
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    (kept_dir / f"step-{step}.json").write_text(json.dumps({"step": step, "epoch": epoch, "metrics": metrics}))
    steps = sorted(int(p.name.removeprefix("step-")) for p in kept_dir.glob("step-*") if p.is_dir())
    for old in steps[:-keep] if keep > 0 else steps:
        shutil.rmtree(kept_dir / f"step-{old}", ignore_errors=True)
        (kept_dir / f"step-{old}.json").unlink(missing_ok=True)
    return steps[-keep:] if keep > 0 else []


def kept_checkpoints(kept_dir: str | None) -> list[dict]:
    """The kept models of `kept_dir`, oldest first: {"step", "epoch", "path", "metrics"}."""
    if not kept_dir or not Path(kept_dir).is_dir():
        return []
    found = []
    for meta in Path(kept_dir).glob("step-*.json"):
        folder = meta.with_suffix("")
        if folder.is_dir():
            found.append({**json.loads(meta.read_text()), "path": str(folder)})
    return sorted(found, key=lambda k: k["step"])


def _name_adapter_base(folder: Path, base_model_id: str | None) -> None:
    """An adapter names its base by registry reference (`<id>@v<N>`), not by the path it was trained from."""
    config_path = folder / "adapter_config.json"
    if base_model_id and config_path.is_file():
        adapter_config = json.loads(config_path.read_text())
        adapter_config["base_model_name_or_path"] = base_model_id
        config_path.write_text(json.dumps(adapter_config, indent=2))


# --- Fit: the base model's validation loss, training (resumed or not), the tuned model's validation loss --------
def fit(trainer: SFTTrainer, bridge: ReporterCallback, *, resume: str | None, val_before: float | None = None) -> TrainResult:
    """Train to the end, or until the reporter asks to stop (status `stopped`: nothing is evaluated after).
    `val_before`: the base's validation loss when measured already (also known to a resumed run)."""
    reporter = bridge.reporter
    validation = trainer.eval_dataset is not None
    if validation and resume is None:
        if val_before is None:
            val_before = float(trainer.evaluate()["eval_loss"])
        reporter.on_step(step=0, total_steps=0, metrics={"eval_loss": val_before})
    output = trainer.train(resume_from_checkpoint=resume)
    state = trainer.state
    result = TrainResult(
        status="completed",
        steps=state.global_step,
        total_steps=state.max_steps,
        train_loss=float(output.training_loss) if output.training_loss is not None and math.isfinite(output.training_loss) else None,
        val_loss_before=val_before,
        resumed_from_step=int(resume.rsplit("-", 1)[-1]) if resume else 0,
        tokens_seen=int(state.num_input_tokens_seen),
        history=bridge.history,
    )
    if state.global_step < state.max_steps and reporter.should_stop():
        result.status = "stopped"
        return result
    if validation:
        final = trainer.evaluate()
        result.val_loss_after = float(final["eval_loss"])
        result.eval_metrics = classifier_metrics(final)
    return result


# --- Save: the finished model, as the registry loads it ---------------------------------------------------------
def save(trainer: SFTTrainer, config: TrainConfig, result: TrainResult) -> None:
    """Adapter (adapter_config.json + adapter_model.safetensors, its base named by registry id) or full weights,
    with the tokenizer, in `config.output_dir`."""
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    trainer.model.save_pretrained(out, safe_serialization=True)
    trainer.processing_class.save_pretrained(out)
    if config.trains_adapter:
        _name_adapter_base(out, config.base_model_id)
    result.output_dir = str(out)


def main(argv: list[str] | None = None) -> None:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1:
        sys.exit("usage: python -m apps.tuning.trainer CONFIG.json")
    config = TrainConfig(**json.loads(Path(args[0]).read_text()))
    result = run_training(config)
    print(json.dumps(asdict(result) | {"history": f"{len(result.history)} entries"}, indent=2))

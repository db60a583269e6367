"""The fine-tuning hyperparameters in one place: names, OpenAI's `auto`, ranges, labels, base learning rates.

Every reader takes them from here: the job service (`hyperparameters_resolve`, the estimate), the customize
page's job form and estimate view, the native API's help text, /v1's job object, and the trainer's
`TrainConfig` defaults. No Django here: the trainer (pure ML code) imports this module.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from apps.core.errors import InvalidRequest
from apps.tuning.trainer.presets import DEFAULT_PRESET, PRESETS, TOKENIZERS, parameter_count


def gettext_noop(message: str) -> str:
    """Marks a label for translation without importing Django (makemessages knows this name); forms translate it."""
    return message


# A standalone trainer run's defaults, and `auto` for a file of 30 to 199 examples (but a LoRA's: see below).
DEFAULT_EPOCHS = 3
DEFAULT_BATCH_SIZE = 4
DEFAULT_LORA_RANK = 16
# The learning rate at multiplier 1: a LoRA adapter trains few weights and takes a large rate, full fine-tuning a
# small one. Continued pre-training trains a LoRA adapter too (so that it runs on a CPU).
# Classification trains a new head from scratch with a LoRA body: a rate between the two.
BASE_LEARNING_RATE = {"lora": 1e-3, "pretrain": 1e-3, "full": 2e-5, "classification": 5e-4,
                      "scratch": 3e-3}  # from scratch: the preset's own rate (trainer/presets.py); this is tiny's
# Measured on the development machine (2 CPU cores, float32): training tokens a second, for the estimate.
# (A classifier's step has no vocabulary-sized output layer: it is faster than a LoRA step on the same tokens.)
CPU_TOKENS_PER_SECOND = {"lora": 200, "pretrain": 200, "full": 140, "classification": 250}
# How a classifier's body trains (its head always trains fully): a LoRA adapter merged at the end, or every weight.
CLASSIFIER_BODIES = ("lora", "full")
# `auto` for a LoRA on a file of 30 to 199 examples counts steps, not epochs: the file is repeated until the model
# has seen about 64 examples (one epoch from 43 examples on), at twice the base rate. Measured on bench/skills.py's three skills (README, Performance >
# Training): 9-10/10 held-out items in 83-121 CPU s at one thread, where 3 epochs at the base rate took 217-289 s
# for the same 9-10/10 and 1 epoch at the base rate stopped at 7-8/10. Only supervised LoRA was measured.
STEP_COUNTED_METHODS = ("lora",)
STEP_COUNTED_EXAMPLES = 64
STEP_COUNTED_RATE_MULTIPLIER = 2.0


def _counts_steps(method: str, examples: int) -> bool:
    return method in STEP_COUNTED_METHODS and 30 <= examples < 200


def _epochs_auto(method: str, examples: int, _chosen: dict) -> int:
    if examples < 30:  # a small file is repeated until the model has seen about 100 examples: a style shows in minutes
        return min(10, math.ceil(100 / max(examples, 1)))
    if _counts_steps(method, examples):
        return max(1, round(STEP_COUNTED_EXAMPLES / examples))
    return DEFAULT_EPOCHS


def _learning_rate_multiplier_auto(method: str, examples: int, _chosen: dict) -> float:
    return STEP_COUNTED_RATE_MULTIPLIER if _counts_steps(method, examples) else 1.0


@dataclass(frozen=True)
class Hyperparameter:
    name: str
    type: type  # int or float (str: one of `choices`)
    low: float
    high: float
    label: str
    # OpenAI's `auto`, from the method, the number of examples and the values chosen before this one.
    auto: Callable[[str, int, dict], float]
    low_open: bool = False  # `low` itself is not allowed
    adapter_only: bool = False  # a LoRA setting: not part of a full fine-tune
    on_page: bool = True  # a field of the customize page's job form
    methods: tuple[str, ...] | None = None  # only these methods take it (None: every method)
    choices: tuple[str, ...] = ()

    def allows(self, value) -> bool:
        if self.choices:
            return value in self.choices
        return (self.low < value if self.low_open else self.low <= value) and value <= self.high

    def applies(self, method: str) -> bool:
        return self.methods is None or method in self.methods


HYPERPARAMETERS = (
    Hyperparameter("n_epochs", int, 1, 50, gettext_noop("Epochs"), auto=_epochs_auto),
    Hyperparameter("batch_size", int, 1, 64, gettext_noop("Batch size"),
                   auto=lambda _method, examples, _chosen: DEFAULT_BATCH_SIZE if examples < 200 else 2 * DEFAULT_BATCH_SIZE),
    Hyperparameter("learning_rate_multiplier", float, 0, 100, gettext_noop("Learning-rate multiplier"),
                   auto=_learning_rate_multiplier_auto, low_open=True),
    Hyperparameter("lora_rank", int, 1, 256, gettext_noop("LoRA rank"), auto=lambda *_: DEFAULT_LORA_RANK,
                   adapter_only=True),
    # Not on the page: alpha follows the rank there (alpha = 2 × rank keeps the adapter's scale when the rank changes).
    Hyperparameter("lora_alpha", int, 1, 1024, gettext_noop("LoRA alpha"), auto=lambda _method, _examples, chosen: 2 * chosen["lora_rank"],
                   adapter_only=True, on_page=False),
    # Classification only (API): `lora` (default) trains the body as a LoRA adapter, `full` trains every weight.
    Hyperparameter("classifier_body", str, 0, 0, gettext_noop("Classifier body"), auto=lambda *_: "lora",
                   on_page=False, methods=("classification",), choices=CLASSIFIER_BODIES),
    # Pre-training from scratch only: the model's size (trainer/presets.py) and its tokenizer (the base's or a new BPE).
    Hyperparameter("preset", str, 0, 0, gettext_noop("Model size"), auto=lambda *_: DEFAULT_PRESET,
                   on_page=False, methods=("scratch",), choices=tuple(PRESETS)),
    Hyperparameter("tokenizer", str, 0, 0, gettext_noop("Tokenizer"), auto=lambda *_: TOKENIZERS[0],
                   on_page=False, methods=("scratch",), choices=TOKENIZERS),
)
NAMES = tuple(h.name for h in HYPERPARAMETERS)
PAGE_NAMES = tuple(h.name for h in HYPERPARAMETERS if h.on_page)
# The API help text of a job's `hyperparameters`.
HYPERPARAMETERS_HELP = (f"{', '.join(NAMES)}: numbers or 'auto' (classifier_body, for method classification: "
                        f"{' or '.join(CLASSIFIER_BODIES)}; preset, for method scratch: {', '.join(PRESETS)}; "
                        f"tokenizer, for method scratch: {' or '.join(TOKENIZERS)}).")


def hyperparameters_resolve(*, method: str, examples: int, given: dict | None) -> dict:
    """The values a job trains with: the given ones checked, `auto` (or a missing one) chosen, and the learning rate."""
    if method not in BASE_LEARNING_RATE:
        raise InvalidRequest(f"method is one of {', '.join(BASE_LEARNING_RATE)}.", param="method")
    given = dict(given or {})
    unknown = set(given) - set(NAMES)
    if unknown:
        raise InvalidRequest(f"Unknown hyperparameter(s): {', '.join(sorted(unknown))}.", param="hyperparameters")
    applying = [h for h in HYPERPARAMETERS if h.applies(method)]
    for h in HYPERPARAMETERS:
        if not h.applies(method) and given.get(h.name) not in (None, "auto"):
            raise InvalidRequest(f"{h.name} is for method {' or '.join(h.methods)} only.", param=f"hyperparameters.{h.name}")
    chosen: dict = {}
    try:
        for h in applying:
            value = given.get(h.name)
            chosen[h.name] = h.type(h.auto(method, examples, chosen) if value in (None, "auto") else value)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest("Hyperparameters are numbers or 'auto'.", param="hyperparameters") from exc
    for h in applying:
        if not h.allows(chosen[h.name]):
            allowed = f"; use {' or '.join(h.choices)}" if h.choices else ""
            raise InvalidRequest(f"{h.name} is out of range{allowed}.", param=f"hyperparameters.{h.name}")
    # From scratch, the rate is the preset's (trainer/presets.py): the smaller the model, the larger.
    rate = PRESETS[chosen["preset"]].learning_rate if method == "scratch" else BASE_LEARNING_RATE[method]
    return {**chosen, "learning_rate": rate * chosen["learning_rate_multiplier"]}


def training_estimate(*, method: str, hyperparameters: dict, examples: int, tokens: int) -> dict:
    """Steps, training tokens and seconds on this hardware's CPU, before anything is queued."""
    if method == "scratch":  # packed blocks of the preset's context, at the preset's speed
        preset = PRESETS[hyperparameters["preset"]]
        blocks = max(tokens // preset.context, 1)
        steps = math.ceil(blocks / hyperparameters["batch_size"]) * hyperparameters["n_epochs"]
        trained = tokens * hyperparameters["n_epochs"]
        return {"steps": steps, "tokens": trained, "seconds_cpu": round(trained / preset.cpu_tokens_per_second),
                "parameters": parameter_count(hyperparameters["preset"])}
    steps = math.ceil(max(examples, 1) / hyperparameters["batch_size"]) * hyperparameters["n_epochs"]
    trained = tokens * hyperparameters["n_epochs"]
    return {"steps": steps, "tokens": trained, "seconds_cpu": round(trained / CPU_TOKENS_PER_SECOND[method])}

"""Training files: chat JSONL, prompt/completion JSONL, classification JSONL ({"text", "label"}), or plain UTF-8
text. Every problem with its line number."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Format = Literal["chat", "prompt_completion", "classification", "text"]
ROLES = {"system", "user", "assistant"}
MIN_EXAMPLES = 10  # of a training file (OpenAI's minimum); a validation file needs one
# The evaluation gate's held-out split (trainer/evaluation.py): here, without torch, as the web's estimate uses it too.
HOLDOUT_FRACTION = 0.1
HOLDOUT_MIN = 3  # fewer held-out examples would say nothing
MAX_PROBLEMS = 50  # a broken file reports its first problems, not thousands
# Classification: a head of 2 to 50 labels; each label needs a few examples to be learnt and one to be checked on
# (a training file without a validation file gives up a tenth of each label's examples to the validation split).
MIN_LABELS, MAX_LABELS, MIN_PER_LABEL, MAX_LABEL_CHARS = 2, 50, 4, 64


@dataclass
class Problem:
    line: int | None
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line else self.message


@dataclass
class FileReport:
    format: Format | None
    examples: list[dict] = field(default_factory=list)
    tokens: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def preview(self, n: int = 3) -> list[dict]:
        """The first examples as the file page shows them (NUL shown as U+FFFD: PostgreSQL's JSON holds no NUL)."""
        return [_without_nul(example) for example in self.examples[:n]]


def _without_nul(value):
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    return value


def _check_chat(obj, line: int) -> list[Problem]:
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        return [Problem(line, '"messages" must be a non-empty list')]
    problems = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            problems.append(Problem(line, f"message {i + 1} is not an object"))
            continue
        role = message.get("role")
        if role not in ROLES:
            problems.append(Problem(line, f"message {i + 1} has role {role!r}; use system, user or assistant"))
        content = message.get("content")
        if not isinstance(content, str) or not content.strip():
            problems.append(Problem(line, f"message {i + 1} ({role}) has empty content"))
    if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        problems.append(Problem(line, "no assistant message: the model learns from the assistant's turns"))
    return problems


def _check_prompt_completion(obj, line: int) -> list[Problem]:
    problems = []
    for key in ("prompt", "completion"):
        if not isinstance(obj.get(key), str) or not obj[key].strip():
            problems.append(Problem(line, f'"{key}" must be a non-empty string'))
    return problems


def _check_classification(obj, line: int) -> list[Problem]:
    problems = []
    if not isinstance(obj.get("text"), str) or not obj["text"].strip():
        problems.append(Problem(line, '"text" must be a non-empty string'))
    label = obj.get("label")
    if not isinstance(label, str) or not label.strip():
        problems.append(Problem(line, '"label" must be a non-empty string'))
    elif len(label) > MAX_LABEL_CHARS:
        problems.append(Problem(line, f'"label" has {len(label)} characters; a label has at most {MAX_LABEL_CHARS}'))
    return problems


def label_counts(examples: list[dict]) -> dict[str, int]:
    """How many examples each label has, in the order the labels first appear."""
    counts: dict[str, int] = {}
    for example in examples:
        counts[example["label"]] = counts.get(example["label"], 0) + 1
    return counts


def label_problems(counts: dict[str, int], *, training: bool) -> list[str]:
    """What keeps these labels from training a classifier head: at most MAX_LABELS in any file; a training file
    also needs MIN_LABELS labels and MIN_PER_LABEL examples of each."""
    problems = []
    if len(counts) > MAX_LABELS:
        problems.append(f"the file has {len(counts)} labels; a classifier takes at most {MAX_LABELS}")
    if training and len(counts) < MIN_LABELS:
        problems.append(f"the file has {len(counts)} label(s); a classifier needs at least {MIN_LABELS}")
    few = [f"{label!r} ({n})" for label, n in counts.items() if n < MIN_PER_LABEL]
    if training and few:
        problems.append(f"each label needs at least {MIN_PER_LABEL} examples; these have fewer: {', '.join(few[:10])}")
    return problems


def classifier_metrics(logged: dict) -> dict:
    """A classifier's logged evaluation (`eval_accuracy`, `eval_macro_f1`, `eval_f1[<label>]`) as the registry and
    the job's events keep it: valid_accuracy, valid_macro_f1, valid_f1 {label: F1}. Empty for another model."""
    if "eval_accuracy" not in logged:
        return {}
    f1 = {k.removeprefix("eval_f1[").removesuffix("]"): float(v) for k, v in logged.items() if k.startswith("eval_f1[")}
    return {"valid_accuracy": float(logged["eval_accuracy"]), "valid_macro_f1": float(logged.get("eval_macro_f1", 0.0)),
            "valid_f1": f1}


def _json_format(obj) -> Format | None:
    if isinstance(obj, dict) and "label" in obj:
        return "classification"
    if isinstance(obj, dict) and "messages" in obj:
        return "chat"
    if isinstance(obj, dict) and ("prompt" in obj or "completion" in obj):
        return "prompt_completion"
    return None


CHECKS = {"chat": _check_chat, "prompt_completion": _check_prompt_completion, "classification": _check_classification}


def _text_line_problems(text: str) -> list[Problem]:
    """Plain text (continued pre-training, pre-training from scratch) with control characters is binary data or a
    broken export, not text to learn from: each such line is named (tabs, newlines and form feeds are text)."""
    problems = []
    for number, line in enumerate(text.splitlines(), start=1):
        bad = next((c for c in line if ord(c) < 32 and c not in "\t\f\r\v"), None)
        if bad is not None:
            problems.append(Problem(number, f"holds the control character U+{ord(bad):04X}: is this a binary file?"))
            if len(problems) >= MAX_PROBLEMS:
                break
    return problems


def validate_file(
    path: Path,
    *,
    expected: Format | None = None,
    max_bytes: int | None = None,
    min_examples: int = MIN_EXAMPLES,
    count_tokens: Callable[[dict], int] | None = None,
    max_tokens: int | None = None,
    training_labels: bool = True,
) -> FileReport:
    """Read and check a training file. `expected="text"` reads plain text (continued pre-training).
    `training_labels=False`: a classification file's labels are checked only against the cap (an upload may become a
    validation file, which may hold a few examples of some labels)."""
    path = Path(path)
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        return FileReport(None, problems=[Problem(None, f"the file is {size:,} bytes; the limit is {max_bytes:,}")])
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return FileReport(None, problems=[Problem(line, "the file is not UTF-8 text")])
    if text.startswith("\ufeff"):
        text = text[1:]

    if expected == "text":
        report = FileReport("text")
        paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
        if not paragraphs:
            report.problems.append(Problem(None, "the file has no text"))
        report.problems.extend(_text_line_problems(text))
        report.examples = [{"text": p} for p in paragraphs]
    else:
        report = FileReport(None)
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            if len(report.problems) >= MAX_PROBLEMS:
                break
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                report.problems.append(Problem(number, f"not valid JSON ({exc.msg} at column {exc.colno})"))
                continue
            fmt = _json_format(obj)
            if fmt is None:
                report.problems.append(Problem(
                    number, 'expected an object with "messages", "prompt" and "completion", or "text" and "label"'))
                continue
            if report.format is None:
                report.format = fmt
            elif fmt != report.format:
                report.problems.append(Problem(number, f"this line is {fmt} but the file started as {report.format}"))
                continue
            problems = CHECKS[fmt](obj, number)
            report.problems.extend(problems)
            if not problems:
                obj["_line"] = number
                report.examples.append(obj)
        if expected is not None and report.format is not None and report.format != expected:
            report.problems.append(Problem(None, f"the file is {report.format}, but {expected} was asked for"))
        if report.format == "classification" and not report.problems:
            counts = label_counts(report.examples)
            report.problems += [Problem(None, p) for p in label_problems(counts, training=training_labels)]
    if not report.examples and not report.problems:
        report.problems.append(Problem(None, "the file has no examples"))
    elif report.format is not None and len(report.examples) < min_examples and not report.problems:
        report.problems.append(
            Problem(None, f"only {len(report.examples)} example(s); at least {min_examples} are needed")
        )
    if count_tokens is not None:
        for example in report.examples:
            n = count_tokens(example)
            report.tokens += n
            if max_tokens is not None and n > max_tokens and len(report.problems) < MAX_PROBLEMS:
                where = example.get("_line")
                report.problems.append(
                    Problem(where, f"this example has {n} tokens; the model's context is {max_tokens}")
                )
    for example in report.examples:
        example.pop("_line", None)
    return report


def holdout_size(examples: int) -> int:
    """How many of a training file's examples a job without a validation file holds out (0: too few to split)."""
    held = max(HOLDOUT_MIN, round(examples * HOLDOUT_FRACTION))
    return held if examples - held >= MIN_EXAMPLES else 0


def holdout_split(examples: list, *, seed: int) -> tuple[list, list]:
    """(training, held out): a seeded, reproducible choice; the held-out ones keep the file's order."""
    held = holdout_size(len(examples))
    if not held:
        return list(examples), []
    chosen = set(random.Random(seed).sample(range(len(examples)), held))
    return [e for i, e in enumerate(examples) if i not in chosen], [e for i, e in enumerate(examples) if i in chosen]

"""Training files: chat JSONL, prompt/completion JSONL, or plain UTF-8 text. Every problem with its line number."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Format = Literal["chat", "prompt_completion", "text"]
ROLES = {"system", "user", "assistant"}
MIN_EXAMPLES = 10  # of a training file (OpenAI's minimum); a validation file needs one
MAX_PROBLEMS = 50  # a broken file reports its first problems, not thousands


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
        return self.examples[:n]


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


def _json_format(obj) -> Format | None:
    if isinstance(obj, dict) and "messages" in obj:
        return "chat"
    if isinstance(obj, dict) and ("prompt" in obj or "completion" in obj):
        return "prompt_completion"
    return None


def validate_file(
    path: Path,
    *,
    expected: Format | None = None,
    max_bytes: int | None = None,
    min_examples: int = MIN_EXAMPLES,
    count_tokens: Callable[[dict], int] | None = None,
    max_tokens: int | None = None,
) -> FileReport:
    """Read and check a training file. `expected="text"` reads plain text (continued pre-training)."""
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
                report.problems.append(Problem(number, 'expected an object with "messages", or "prompt" and "completion"'))
                continue
            if report.format is None:
                report.format = fmt
            elif fmt != report.format:
                report.problems.append(Problem(number, f"this line is {fmt} but the file started as {report.format}"))
                continue
            problems = _check_chat(obj, number) if fmt == "chat" else _check_prompt_completion(obj, number)
            report.problems.extend(problems)
            if not problems:
                obj["_line"] = number
                report.examples.append(obj)
        if expected is not None and report.format is not None and report.format != expected:
            report.problems.append(Problem(None, f"the file is {report.format}, but {expected} was asked for"))
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

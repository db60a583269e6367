"""What each kind of app sends to the model. Plain functions of the app's settings and the user's input."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from apps.catalog.builtin import GENERATOR_LENGTHS, LANGUAGES
from apps.core.errors import InvalidRequest

MAX_INPUT_CHARS = 8000


@dataclass
class Prompt:
    messages: list[dict]
    max_tokens: int
    trimmed_turns: int = 0  # older turns left out to fit the context
    stop: tuple[str, ...] = ()
    temperature: float | None = None  # None: the app's own


class _Blank(dict):
    def __missing__(self, key):
        return ""


def _text(value, name: str, *, required: bool = True) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if required and not text:
        raise InvalidRequest(f"Please fill in {name}.", param=name)
    if len(text) > MAX_INPUT_CHARS:
        raise InvalidRequest(f"{name} is too long ({len(text)} characters; at most {MAX_INPUT_CHARS}).", param=name)
    return text


def generator_prompt(app, fields: dict) -> Prompt:
    values = _Blank()
    for spec in app.input_fields:
        raw = fields.get(spec["name"], spec.get("default", ""))
        if spec.get("type") == "select" and raw not in spec.get("choices", []):
            raise InvalidRequest(f"Choose one of the offered values for {spec['label']}.", param=spec["name"])
        values[spec["name"]] = _text(raw, spec["name"], required=spec.get("required", False))
    max_tokens = app.max_tokens
    if app.is_builtin and "length" in values:
        words, max_tokens = GENERATOR_LENGTHS[values["length"]]
        values["words"] = str(words)
    messages = [{"role": "system", "content": app.instructions}] if app.instructions else []
    messages.append({"role": "user", "content": app.prompt_template.format_map(values)})
    return Prompt(messages, max_tokens)


def translator_prompt(app, *, text: str, source: str, target: str) -> Prompt:
    for name, language in (("source", source), ("target", target)):
        if language not in LANGUAGES:
            raise InvalidRequest(f"Choose a {name} language from the list.", param=name)
    if source == target:
        raise InvalidRequest("Source and target languages are the same.", param="target")
    text = _text(text, "text")
    system = app.instructions.format_map(_Blank(source=source, target=target))
    # The translation alone: a one-line text gets a one-line answer (small models go on explaining otherwise),
    # and greedy decoding, since a translation has one best answer rather than many creative ones.
    stop = ("\n",) if "\n" not in text else ()
    return Prompt(
        [{"role": "system", "content": system}, {"role": "user", "content": text}], app.max_tokens, stop=stop, temperature=0.0
    )


def chat_prompt(app, *, history: list[dict], message: str, count_tokens: Callable[[list[dict]], int], context: int) -> Prompt:
    """System instructions, then the newest turns that fit the model's context with room for the answer."""
    message = _text(message, "message")
    system = [{"role": "system", "content": app.instructions}] if app.instructions else []
    turns = [*history, {"role": "user", "content": message}]
    budget = context - app.max_tokens
    dropped = 0
    while len(turns) > 1 and count_tokens(system + turns) > budget:
        turns = turns[2:] if len(turns) > 2 else turns[1:]  # drop the oldest user/assistant pair
        dropped += 1
    return Prompt(system + turns, app.max_tokens, trimmed_turns=dropped)

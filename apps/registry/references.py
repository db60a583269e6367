"""Model references: `<id>` (alias `latest`), `<id>@<alias>` or `<id>@v<N>`. `@` never appears in an id."""

from __future__ import annotations

import re
from dataclasses import dataclass

from apps.core.errors import InvalidRequest

DEFAULT_ALIAS = "latest"
_VERSION = re.compile(r"^v(\d+)$")
_ALIAS = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class Reference:
    model_id: str
    alias: str | None = None
    number: int | None = None

    def __str__(self) -> str:
        return f"{self.model_id}@v{self.number}" if self.number is not None else f"{self.model_id}@{self.alias}"


def parse_reference(text: str) -> Reference:
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequest("A model reference is required.", param="model")
    text = text.strip()
    model_id, sep, selector = text.partition("@")
    if not model_id or "@" in selector or (sep and not selector):
        raise InvalidRequest(f"{text!r} is not a model reference: use <id>, <id>@<alias> or <id>@v<N>.", param="model")
    if not sep:
        return Reference(model_id, alias=DEFAULT_ALIAS)
    if match := _VERSION.match(selector):
        return Reference(model_id, number=int(match.group(1)))
    if not _ALIAS.match(selector):
        raise InvalidRequest(f"{selector!r} is not a valid alias name.", param="model")
    return Reference(model_id, alias=selector)

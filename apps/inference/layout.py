"""The registry's folder layout, shared by the registry (which writes it) and the model server (which reads it
without a database). Pure Python: `<root>/<folder_for_model_id(id)>/<N>/` holds version N of model `id`."""

from __future__ import annotations

import re

# The most adapters stacked on one full-weights model: a fine-tune of a LoRA fine-tune is an adapter on an adapter,
# loaded by merging the chain from its root (each link costs a merge when the model loads).
ADAPTER_CHAIN_MAX = 4


class LayoutError(ValueError):
    pass


def folder_for_model_id(model_id: str) -> str:
    """`ft:smollm2-135m-instruct:alice::ftjob-x` → `ft_smollm2-135m-instruct_alice__ftjob-x`.

    One path component, never `.` or `..` (every character outside `[A-Za-z0-9._-]` becomes `_`, leading dots go):
    whatever the id, its folder is a direct child of the registry root."""
    folder = re.sub(r"[^A-Za-z0-9._-]", "_", model_id).lstrip(".")
    if not folder:
        raise LayoutError(f"model id {model_id!r} has no filesystem-safe form")
    return folder

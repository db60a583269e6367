"""One LoRA merge in a process of its own: `python -m apps.registry.merge_child BASE ADAPTER OUT [THREADS [PARENT...]]`
(PARENT: the adapters merged onto BASE before ADAPTER, in order, for a fine-tune of a LoRA fine-tune).

Started by the merged-weights build (`apps/registry/merged.py`, in a Celery task): torch, transformers and peft
load here and leave with this process, so neither the web tier nor the long-lived worker holds them, and a merge
that runs out of memory takes down this process alone. It writes the merged model and its tokenizer to OUT with
the inference engine's own merge (`apps.inference.loading.save_merged`). No Django here.
"""

from __future__ import annotations

import sys

import torch

from apps.inference.loading import save_merged


def main(argv: list[str]) -> None:
    base, adapter, out, *rest = argv
    threads = int(rest[0]) if rest else 0
    if threads:
        torch.set_num_threads(threads)
    save_merged(base, adapter, out, parents=rest[1:])


if __name__ == "__main__":
    main(sys.argv[1:])

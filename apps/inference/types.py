"""The engine's interface types: what a request asks for and what comes back. Plain dataclasses, no Django."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

from apps.core.errors import InvalidRequest, ServerError

FinishReason = Literal["stop", "length", "cancelled"]


class InferenceError(ServerError):
    """The engine failed; its subclasses below are the caller's fault (4xx) or a busy engine (503)."""

    code = "inference_error"

    def __init__(self, message: str, *, param: str | None = None):
        super().__init__(message, param=param)


class ContextLengthExceeded(InferenceError):
    code = "context_length_exceeded"
    status = 400
    type = "invalid_request_error"


class InvalidSampling(InferenceError):
    code = "invalid_sampling"
    status = 400
    type = "invalid_request_error"


class ModelUnavailable(InferenceError):
    code = "model_unavailable"
    status = 503


class EngineOverloaded(InferenceError):
    """The model server's queue for this model is full: try again in `retry_after` seconds (a 503 with Retry-After;
    `/v1` passes it on as OpenAI's `server_error`, code `engine_overloaded`, which the `openai` client retries)."""

    code = "engine_overloaded"
    status = 503

    def __init__(self, message: str, *, retry_after: int = 1, param: str | None = None):
        super().__init__(message, param=param)
        self.retry_after = max(1, int(retry_after))

    @property
    def headers(self) -> dict:
        return {"Retry-After": str(self.retry_after)}


@dataclass(frozen=True)
class ModelSpec:
    """What to load: a registry version folder (full weights), or a LoRA adapter folder with its base."""

    key: str  # the version's reference, e.g. "smollm2-135m-instruct@v1"; also the name sent to a remote server
    path: str
    kind: Literal["full", "lora"] = "full"
    base: ModelSpec | None = None


@dataclass
class SamplingParams:
    max_tokens: int | None = None  # None: as many as the context leaves
    temperature: float = 1.0  # 0: greedy
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    stop: tuple[str, ...] = ()
    seed: int | None = None
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    num_beams: int = 1
    ignore_eos: bool = False  # keep going past the end-of-sequence token (benchmarks; as vLLM's)
    # repetition_penalty and no_repeat_ngram_size count the prompt's tokens too, as transformers' and vLLM's do.
    # False: the answer's own only (as OpenAI's frequency and presence penalties), for a prompt that holds text
    # the answer should quote (an app's knowledge passages).
    penalize_prompt: bool = True

    def validate(self) -> SamplingParams:
        checks = [
            (self.max_tokens is None or (isinstance(self.max_tokens, int) and self.max_tokens >= 1), "max_tokens", "must be a whole number of at least 1"),
            (0 <= self.temperature <= 2, "temperature", "must be between 0 and 2"),
            (0 < self.top_p <= 1, "top_p", "must be greater than 0 and at most 1"),
            (isinstance(self.top_k, int) and self.top_k >= 0, "top_k", "must be a whole number, 0 or more"),
            (0 < self.repetition_penalty <= 10, "repetition_penalty", "must be greater than 0 and at most 10"),
            (isinstance(self.no_repeat_ngram_size, int) and self.no_repeat_ngram_size >= 0, "no_repeat_ngram_size", "must be 0 or more"),
            (isinstance(self.num_beams, int) and 1 <= self.num_beams <= 8, "num_beams", "must be between 1 and 8"),
            (len(self.stop) <= 4 and all(isinstance(s, str) and s for s in self.stop), "stop", "takes up to 4 non-empty strings"),
            (self.seed is None or isinstance(self.seed, int), "seed", "must be a whole number"),
        ]
        for ok, param, message in checks:
            if not ok:
                raise InvalidSampling(f"{param} {message}.", param=param)
        return self

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class GenerationRequest:
    model: ModelSpec
    messages: list[dict] | None = None  # chat: [{"role": ..., "content": ...}], formatted by the model's template
    prompt: str | None = None  # plain completion: the text as it is
    params: SamplingParams = field(default_factory=SamplingParams)


@dataclass
class GenerationResult:
    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    model: str = ""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class StreamEvent:
    """One piece of a stream: text to append, and on the last event the whole result."""

    delta: str = ""
    result: GenerationResult | None = None


@dataclass(frozen=True)
class TokenCount:
    """A prompt's length in tokens as the engine encodes it (chat template included), and the model's context."""

    count: int
    context: int


class Engine(Protocol):
    """Every engine (in process, or a client of a model server) answers the same calls.

    `stream` and `astream` start the generation when called (sync) or awaited (async): a request the engine
    refuses (bad sampling, too long, a full queue) raises there, before any event. Closing the iterator early
    (`close()` / `aclose()`) cancels the generation at once."""

    def generate(self, request: GenerationRequest) -> GenerationResult: ...

    def stream(self, request: GenerationRequest) -> Iterator[StreamEvent]: ...

    async def astream(self, request: GenerationRequest) -> AsyncIterator[StreamEvent]: ...

    def tokenize(self, request: GenerationRequest) -> TokenCount: ...


MAX_CLASSIFIER_INPUTS = 64  # texts in one classification request: one batch


def classifier_inputs(texts) -> list[str]:
    """One text or a list of them, each non-empty: what a classification request takes."""
    items = [texts] if isinstance(texts, str) else texts
    if not isinstance(items, list) or not items or not all(isinstance(t, str) for t in items):
        raise InvalidRequest("input must be a text or a non-empty list of texts.", param="input")
    if len(items) > MAX_CLASSIFIER_INPUTS:
        raise InvalidRequest(f"input holds {len(items)} texts; one request classifies at most {MAX_CLASSIFIER_INPUTS}.", param="input")
    for i, text in enumerate(items):
        if not text.strip():
            raise InvalidRequest("The text to classify is empty." if len(items) == 1 else f"input[{i}] is empty.",
                                 param="input")
    return items

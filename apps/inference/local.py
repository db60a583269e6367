"""The local engine: transformers on CPU or CUDA, with continuous batching.

Models load from safetensors only (`loading.py`), once each even when many requests ask at the same moment,
into a cache bounded by memory (`cache.py`). Each loaded model has one scheduler thread that owns it and
batches the requests that arrive while others decode (`scheduler.py`). This module checks requests against
the model's context and turns a scheduled sequence into a stream of events.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator

import torch

from apps.inference.cache import ModelCache
from apps.inference.classifier import ClassifierEngine
from apps.inference.loading import LoadedModel, load_model
from apps.inference.sampling import TokenSampler
from apps.inference.scheduler import BEAM_MAX_NEW_TOKENS, BatchScheduler, Sequence
from apps.inference.textstream import TextAssembler
from apps.inference.types import (
    ContextLengthExceeded,
    GenerationRequest,
    GenerationResult,
    InferenceError,
    ModelSpec,
    StreamEvent,
    TokenCount,
)

logger = logging.getLogger(__name__)


def plain_prompt(messages: list[dict]) -> str:
    """Chat messages as plain text, for a model with no chat template: their contents in order, a blank line
    between them, nothing after the last (the model continues it)."""
    return "\n\n".join(m["content"].strip() for m in messages if m["content"].strip())


class LocalEngine:
    def __init__(
        self,
        *,
        dtype: str = "bfloat16",
        device: str | None = None,
        max_cache_bytes: int = 2 * 2**30,
        max_batch: int = 16,
        num_threads: int = 0,
        quantize: str = "none",
        queue_limit: int | None = None,
    ):
        """`queue_limit`: sequences (beam searches count num_beams) that may wait per model beyond its running batch;
        past it a request is refused with EngineOverloaded (503 + Retry-After). None: no bound (in process)."""
        if quantize not in ("none", "int8"):
            raise ValueError(f"quantize must be 'none' or 'int8', not {quantize!r}")
        self.quantize = quantize
        if num_threads > 0:
            torch.set_num_threads(num_threads)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = getattr(torch, dtype)
        self.max_batch = max_batch
        self.queue_limit = queue_limit
        self.cache = ModelCache(self._load, max_bytes=max_cache_bytes)
        # Classifiers (task `classifier`) on transformers, beside the chat models: one forward pass, float32.
        self.classifier = ClassifierEngine(max_cache_bytes=max_cache_bytes, device=self.device)
        # Stop the scheduler threads before the interpreter tears torch down under them.
        atexit.register(self.close)

    def close(self) -> None:
        """Stop every scheduler thread (each finishes what it holds first)."""
        for loaded in self.cache.loaded():
            scheduler = loaded.scheduler
            if scheduler is not None:
                scheduler.stop()
                scheduler.join(timeout=30)

    def _load(self, spec: ModelSpec) -> LoadedModel:
        started = time.monotonic()
        scheduler = BatchScheduler(
            spec,
            lambda s: load_model(s, dtype=self.dtype, device=self.device, quantize=self.quantize),
            max_batch=self.max_batch,
        )
        scheduler.ready.wait()
        if scheduler.load_error is not None:
            raise scheduler.load_error
        loaded = scheduler.loaded
        loaded.scheduler = scheduler
        logger.info("loaded %s in %.1fs (%.0f MB)", spec.key, time.monotonic() - started, loaded.nbytes / 2**20)
        return loaded

    def classify(self, spec: ModelSpec, texts) -> list[dict]:
        """Each text's {"label", "scores", "tokens"} (as the remote engine answers it)."""
        return [c.as_dict() for c in self.classifier.classify(spec, texts)]

    def prompt_ids(self, loaded: LoadedModel, request: GenerationRequest, *, add_generation_prompt: bool = True,
                   add_special_tokens: bool = False) -> list[int]:
        """The prompt as generation encodes it (the defaults); the other flags serve /tokenize callers."""
        tokenizer = loaded.tokenizer
        if request.messages is not None and not tokenizer.chat_template:
            # A plain language model (task `text`, e.g. pre-trained from scratch) has no chat template: the messages
            # become one text that the model continues, on every face (chat, generator apps, /v1).
            return tokenizer(plain_prompt(request.messages), add_special_tokens=add_special_tokens)["input_ids"]
        if request.messages is not None:
            return list(tokenizer.apply_chat_template(request.messages, add_generation_prompt=add_generation_prompt,
                                                      tokenize=True, return_dict=False))
        return tokenizer(request.prompt or "", add_special_tokens=add_special_tokens)["input_ids"]

    def _start(self, request: GenerationRequest, *, out=None, cancelled: threading.Event | None = None) -> Sequence:
        params = request.params.validate()
        loaded = self.cache.get(request.model)
        ids = self.prompt_ids(loaded, request)
        context = loaded.context_length
        if not ids:
            raise ContextLengthExceeded("The prompt is empty.", param="messages")
        if len(ids) >= context:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {context} tokens; the prompt has {len(ids)} tokens. "
                "Shorten the prompt.",
                param="messages",
            )
        max_new = params.max_tokens if params.max_tokens is not None else context - len(ids)
        if len(ids) + max_new > context:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {context} tokens; the prompt has {len(ids)} tokens and "
                f"{max_new} more were asked for. Lower max_tokens or shorten the prompt.",
                param="max_tokens",
            )
        if params.num_beams > 1:
            max_new = min(max_new, BEAM_MAX_NEW_TOKENS)  # beam search is bounded (scheduler.py)
        seq = Sequence(
            prompt_ids=ids,
            max_new_tokens=max_new,
            sampler=TokenSampler(params, device=self.device),
            assembler=TextAssembler(loaded.tokenizer, tuple(params.stop)),
            num_beams=params.num_beams,
        )
        if out is not None:
            seq.out = out
        if cancelled is not None:
            seq.cancelled = cancelled
        loaded.scheduler.submit(seq, queue_limit=self.queue_limit)
        return seq

    def stream(self, request: GenerationRequest) -> Iterator[StreamEvent]:
        seq = self._start(request)
        return _Cancelling(self._events(seq), seq)

    def _events(self, seq: Sequence) -> Iterator[StreamEvent]:
        try:
            while True:
                event = seq.out.get()
                if isinstance(event, Exception):
                    raise event
                yield event
                if event.result is not None:
                    return
        finally:
            # The consumer stopped reading (client gone, stop pressed): free the slot at the next step.
            if not seq.done:
                seq.cancelled.set()

    async def astream(self, request: GenerationRequest) -> AsyncIterator[StreamEvent]:
        """The stream for an event loop: the scheduler thread hands each event to the loop; no thread waits on it.

        Starting (tokenizing, maybe loading the model) runs in a worker thread; refusals raise here."""
        out = _LoopQueue(asyncio.get_running_loop())
        cancelled = threading.Event()
        try:
            seq = await asyncio.to_thread(self._start, request, out=out, cancelled=cancelled)
        except asyncio.CancelledError:
            cancelled.set()  # the caller left while it started: the scheduler drops it at its next step
            raise
        return _ACancelling(self._aevents(seq, out.queue), seq)

    async def _aevents(self, seq: Sequence, events: asyncio.Queue) -> AsyncIterator[StreamEvent]:
        try:
            while True:
                event = await events.get()
                if isinstance(event, Exception):
                    raise event
                yield event
                if event.result is not None:
                    return
        finally:
            if not seq.done:
                seq.cancelled.set()

    def generate(self, request: GenerationRequest) -> GenerationResult:
        for event in self.stream(request):
            if event.result is not None:
                return event.result
        raise InferenceError("the stream ended without a result")  # pragma: no cover - _events always ends with one

    def tokenize(self, request: GenerationRequest) -> TokenCount:
        ids, context = self.token_ids(request)
        return TokenCount(len(ids), context)

    def token_ids(self, request: GenerationRequest, **flags) -> tuple[list[int], int]:
        """The prompt's token ids (as `prompt_ids` encodes them, loading the model if needed) and the context."""
        loaded = self.cache.get(request.model)
        return self.prompt_ids(loaded, request, **flags), loaded.context_length

    def scheduler_for(self, key: str) -> BatchScheduler | None:
        """The scheduler of a loaded model (None when it is not loaded): its load, for tests and the server."""
        loaded = next((m for m in self.cache.loaded() if m.spec.key == key), None)
        return loaded.scheduler if loaded is not None else None


class _Cancelling:
    """A sequence's events; closing them cancels the sequence even before the first was read (a generator's own
    `finally` runs only once it has started: the second of n streams is closed unread when the client leaves)."""

    def __init__(self, events: Iterator[StreamEvent], seq: Sequence):
        self.events, self.seq = events, seq

    def __iter__(self):
        return self

    def __next__(self) -> StreamEvent:
        return next(self.events)

    def close(self) -> None:
        if not self.seq.done:
            self.seq.cancelled.set()
        self.events.close()


class _ACancelling:
    """`_Cancelling` for an event loop."""

    def __init__(self, events: AsyncIterator[StreamEvent], seq: Sequence):
        self.events, self.seq = events, seq

    def __aiter__(self):
        return self

    async def __anext__(self) -> StreamEvent:
        return await self.events.__anext__()

    async def aclose(self) -> None:
        if not self.seq.done:
            self.seq.cancelled.set()
        await self.events.aclose()


class _LoopQueue:
    """Where the scheduler thread puts an async consumer's events: on that consumer's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()

    def put(self, item) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody reads this stream any more
            pass

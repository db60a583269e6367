"""The local engine: transformers on CPU or CUDA, with continuous batching.

Each loaded model has one scheduler thread that owns it. Requests queue up; between decode steps the scheduler
prefills the newcomers and merges their KV cache into the running batch (left-padded), so requests that arrive
while others decode join the batch at the next step. Finished and cancelled sequences leave the batch at once.
Models load from safetensors only (`use_safetensors=True`, never `trust_remote_code`), once each even when
many requests ask at the same moment, into a cache bounded by memory (least recently used out).
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from apps.inference.sampling import TokenSampler
from apps.inference.textstream import TextAssembler
from apps.inference.types import (
    ContextLengthExceeded,
    GenerationRequest,
    GenerationResult,
    InferenceError,
    ModelSpec,
    ModelUnavailable,
    StreamEvent,
)

logger = logging.getLogger(__name__)


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


def load_model(spec: ModelSpec, *, dtype: torch.dtype, device: str, quantize: str = "none") -> LoadedModel:
    """Load a registry folder; a LoRA adapter is applied to its base and merged (one model, full speed).

    quantize="int8" (CPU, bfloat16): weight-only int8 for decoding (apps/inference/quantize.py).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def from_folder(path: str):
        # use_safetensors=True: a folder with only pickled weights fails instead of running a pickle.
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True)

    try:
        if spec.kind == "lora":
            from peft import PeftModel

            if spec.base is None:
                raise ModelUnavailable(f"{spec.key} is an adapter without a base model")
            model = PeftModel.from_pretrained(from_folder(spec.base.path), spec.path).merge_and_unload()
            tok_path = spec.path if (Path(spec.path) / "tokenizer_config.json").exists() else spec.base.path
        else:
            model = from_folder(spec.path)
            tok_path = spec.path
        tokenizer = AutoTokenizer.from_pretrained(tok_path)
    except InferenceError:
        raise
    except Exception as exc:
        raise ModelUnavailable(f"{spec.key} could not be loaded: {type(exc).__name__}: {exc}") from exc
    model.to(device).eval()
    if quantize == "int8" and device == "cpu" and dtype == torch.bfloat16:
        from apps.inference.quantize import quantize_for_decoding

        quantize_for_decoding(model)
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


class ModelCache:
    """Loaded models, least recently used out once their total size passes `max_bytes`.

    A model that many requests ask for at once is loaded by the first of them; the others wait for that load.
    """

    def __init__(self, loader: Callable[[ModelSpec], LoadedModel], *, max_bytes: int):
        self.loader = loader
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, LoadedModel] = OrderedDict()
        self._loading: dict[str, Future] = {}
        self._lock = threading.Lock()
        self.loads = 0
        self.evictions = 0

    def get(self, spec: ModelSpec) -> LoadedModel:
        with self._lock:
            if spec.key in self._entries:
                self._entries.move_to_end(spec.key)
                return self._entries[spec.key]
            future = self._loading.get(spec.key)
            owner = future is None
            if owner:
                future = self._loading[spec.key] = Future()
        if not owner:
            return future.result()
        try:
            loaded = self.loader(spec)
            self.loads += 1
        except BaseException as exc:
            future.set_exception(exc)
            with self._lock:
                del self._loading[spec.key]
            raise
        with self._lock:
            self._entries[spec.key] = loaded
            del self._loading[spec.key]
            self._evict_over_budget(keep=spec.key)
        future.set_result(loaded)
        return loaded

    def _evict_over_budget(self, *, keep: str) -> None:
        while sum(m.nbytes for m in self._entries.values()) > self.max_bytes and len(self._entries) > 1:
            key = next(k for k in self._entries if k != keep)
            evicted = self._entries.pop(key)
            self.evictions += 1
            if evicted.scheduler is not None:
                evicted.scheduler.stop()  # it finishes the sequences it holds, then lets the model go
            logger.info("evicted %s (%.0f MB) from the model cache", key, evicted.nbytes / 2**20)

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(m.nbytes for m in self._entries.values())


@dataclass
class Sequence:
    prompt_ids: list[int]
    max_new_tokens: int
    sampler: TokenSampler
    assembler: TextAssembler
    num_beams: int = 1
    out: queue.Queue = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    generated: list[int] = field(default_factory=list)
    cached_tokens: int = 0  # real (non-pad) tokens of this sequence in the batch's KV cache
    done: bool = False

    @property
    def last_token(self) -> int:
        return self.generated[-1]


class BatchScheduler:
    """Owns one loaded model; runs a decode loop over a batch that sequences join and leave between steps."""

    def __init__(self, spec: ModelSpec, loader: Callable[[ModelSpec], LoadedModel], *, max_batch: int = 16):
        self.spec = spec
        self.max_batch = max_batch
        self._waiting: deque[Sequence] = deque()
        self._cv = threading.Condition()
        self._stopping = False
        self.active: list[Sequence] = []
        self._cache = None  # transformers DynamicCache of the running batch
        self._mask: torch.Tensor | None = None  # [batch, cached length]: 1 real token, 0 left padding
        self.steps = 0
        self.max_batch_seen = 0
        self.loaded: LoadedModel | None = None
        self.load_error: BaseException | None = None
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(loader,), name=f"batch-{spec.key}", daemon=True)
        self._thread.start()

    # --- called from request threads ---
    def submit(self, seq: Sequence) -> None:
        with self._cv:
            if self._stopping:
                raise ModelUnavailable(f"{self.spec.key} is being unloaded; try again")
            self._waiting.append(seq)
            self._cv.notify()

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def load(self) -> int:
        return len(self.active) + len(self._waiting)

    # --- the scheduler thread ---
    def _run(self, loader) -> None:
        # The model is loaded by the thread that serves it. Measured here: a model loaded in one thread and
        # run in another decodes at half speed with the int8 kernel (OpenMP thread teams), loaded here at full.
        try:
            self.loaded = loader(self.spec)
        except BaseException as exc:
            self.load_error = exc
            return
        finally:
            self.ready.set()
        torch.set_grad_enabled(False)
        while True:
            with self._cv:
                while not self._waiting and not self.active and not self._stopping:
                    self._cv.wait()
                if self._stopping and not self._waiting and not self.active:
                    return
                room = self.max_batch - len(self.active)
                admitted = [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]
            try:
                with torch.inference_mode():
                    self._admit(admitted)
                    if self.active:
                        self._step()
            except Exception as exc:  # a failing step fails its sequences, never the thread
                logger.exception("generation step failed on %s", self.spec.key)
                error = ModelUnavailable(f"generation failed: {type(exc).__name__}: {exc}")
                for seq in self.active + admitted:
                    if not seq.done:
                        seq.done = True
                        seq.out.put(error)
                self.active, self._cache, self._mask = [], None, None

    def _admit(self, seqs: list[Sequence]) -> None:
        fresh = []
        for seq in seqs:
            if seq.cancelled.is_set():
                self._finish(seq, "cancelled")
            elif seq.num_beams > 1:
                self._beam_search(seq)
            else:
                fresh.append(seq)
        if not fresh:
            return
        model, device = self.loaded.model, self.loaded.device
        length = max(len(s.prompt_ids) for s in fresh)
        pad = self.loaded.tokenizer.pad_token_id or 0
        ids = torch.tensor([[pad] * (length - len(s.prompt_ids)) + s.prompt_ids for s in fresh], device=device)
        mask = torch.tensor([[0] * (length - len(s.prompt_ids)) + [1] * len(s.prompt_ids) for s in fresh], device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        from transformers import DynamicCache

        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            cache=DynamicCache(config=model.config),
            use_cache=True,
            logits_to_keep=1,
        )
        for seq in fresh:
            seq.cached_tokens = len(seq.prompt_ids)
        self._merge(out.cache, mask, fresh)
        self._sample_and_prune(out.logits[:, -1, :], first_row=len(self.active) - len(fresh))

    def _merge(self, cache, mask: torch.Tensor, seqs: list[Sequence]) -> None:
        """Add newly prefilled rows to the running batch, left-padding whichever side is shorter."""
        if not self.active:
            self._cache, self._mask, self.active = cache, mask, list(seqs)
            return
        old_len, new_len = self._mask.shape[1], mask.shape[1]
        length = max(old_len, new_len)

        def left_pad(t: torch.Tensor, n: int, dim_from_end: int) -> torch.Tensor:
            if n == 0:
                return t
            pads = [0, 0] * (dim_from_end - 1) + [n, 0]
            return F.pad(t, pads)

        for old_layer, new_layer in zip(self._cache.layers, cache.layers, strict=True):
            old_layer.keys = torch.cat([left_pad(old_layer.keys, length - old_len, 2), left_pad(new_layer.keys, length - new_len, 2)])
            old_layer.values = torch.cat(
                [left_pad(old_layer.values, length - old_len, 2), left_pad(new_layer.values, length - new_len, 2)]
            )
        self._mask = torch.cat([left_pad(self._mask, length - old_len, 1), left_pad(mask, length - new_len, 1)])
        self.active.extend(seqs)

    def _step(self) -> None:
        for seq in self.active:
            if seq.cancelled.is_set():
                self._finish(seq, "cancelled")
        self._prune()
        if not self.active:
            return
        device = self.loaded.device
        ids = torch.tensor([[s.last_token] for s in self.active], device=device)
        positions = torch.tensor([[s.cached_tokens] for s in self.active], device=device)
        self._mask = torch.cat([self._mask, torch.ones((len(self.active), 1), dtype=self._mask.dtype, device=device)], 1)
        # No padding anywhere (one sequence, or equal lengths): the plain causal mask is cheaper to apply.
        mask = None if self._mask.shape[1] == self.active[0].cached_tokens + 1 and bool(self._mask.all()) else self._mask
        out = self.loaded.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=self._cache, use_cache=True)
        self._cache = out.cache
        for seq in self.active:
            seq.cached_tokens += 1
        self.steps += 1
        self.max_batch_seen = max(self.max_batch_seen, len(self.active))
        self._sample_and_prune(out.logits[:, -1, :], first_row=0)

    def _sample_and_prune(self, logits: torch.Tensor, *, first_row: int) -> None:
        logits = logits.float()
        # Row i of `logits` belongs to self.active[first_row + i] (a prefill has rows for the newcomers only).
        for row, seq in enumerate(self.active[first_row:]):
            history = seq.prompt_ids + seq.generated if seq.sampler.needs_history else None
            self._accept(seq, seq.sampler.choose(logits[row], history))
        self._prune()

    def _accept(self, seq: Sequence, token: int) -> None:
        seq.generated.append(token)
        if token in self.loaded.eos_ids and not seq.sampler.params.ignore_eos:
            return self._finish(seq, "stop")
        delta = seq.assembler.add(token)
        if delta:
            seq.out.put(StreamEvent(delta=delta))
        if seq.assembler.stopped:
            return self._finish(seq, "stop")
        if len(seq.generated) >= seq.max_new_tokens:
            return self._finish(seq, "length")
        return None

    def _finish(self, seq: Sequence, reason: str) -> None:
        if seq.done:
            return
        seq.done = True
        tail = seq.assembler.flush()
        result = GenerationResult(
            text=seq.assembler.text,
            finish_reason=reason,
            prompt_tokens=len(seq.prompt_ids),
            completion_tokens=len(seq.generated),
            model=self.loaded.spec.key,
        )
        seq.out.put(StreamEvent(delta=tail, result=result))

    def _prune(self) -> None:
        """Drop finished rows from the batch and the left-padding columns no remaining row needs."""
        keep = [i for i, s in enumerate(self.active) if not s.done]
        if len(keep) == len(self.active):
            return
        if not keep:
            self.active, self._cache, self._mask = [], None, None
            return
        index = torch.tensor(keep, device=self.loaded.device)
        self._cache.batch_select_indices(index)
        self._mask = self._mask.index_select(0, index)
        self.active = [self.active[i] for i in keep]
        leading = int((self._mask.cumsum(1) == 0).sum(1).min().item())
        if leading:
            self._mask = self._mask[:, leading:]
            for layer in self._cache.layers:
                layer.keys = layer.keys[:, :, leading:, :]
                layer.values = layer.values[:, :, leading:, :]

    def _beam_search(self, seq: Sequence) -> None:
        """Beam search runs on its own between batch steps (it keeps several hypotheses per request)."""
        p = seq.sampler.params
        ids = torch.tensor([seq.prompt_ids], device=self.loaded.device)
        out = self.loaded.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            num_beams=seq.num_beams,
            do_sample=False,
            max_new_tokens=seq.max_new_tokens,
            repetition_penalty=p.repetition_penalty,
            no_repeat_ngram_size=p.no_repeat_ngram_size or None,
            eos_token_id=sorted(self.loaded.eos_ids),
            pad_token_id=self.loaded.tokenizer.pad_token_id,
            early_stopping=True,
        )
        for token in out[0, len(seq.prompt_ids) :].tolist():
            self._accept(seq, token)
            if seq.done:
                return
        self._finish(seq, "length" if len(seq.generated) >= seq.max_new_tokens else "stop")


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
    ):
        if quantize not in ("none", "int8"):
            raise ValueError(f"quantize must be 'none' or 'int8', not {quantize!r}")
        self.quantize = quantize
        if num_threads > 0:
            torch.set_num_threads(num_threads)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = getattr(torch, dtype)
        self.max_batch = max_batch
        self.cache = ModelCache(self._load, max_bytes=max_cache_bytes)
        # Stop the scheduler threads before the interpreter tears torch down under them.
        atexit.register(self.close)

    def close(self) -> None:
        """Stop every scheduler thread (each finishes what it holds first)."""
        for key in self.cache.keys():
            scheduler = self.cache._entries[key].scheduler
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

    def prompt_ids(self, loaded: LoadedModel, request: GenerationRequest) -> list[int]:
        tokenizer = loaded.tokenizer
        if request.messages is not None:
            return list(tokenizer.apply_chat_template(request.messages, add_generation_prompt=True, tokenize=True, return_dict=False))
        return tokenizer(request.prompt or "", add_special_tokens=False)["input_ids"]

    def _start(self, request: GenerationRequest) -> Sequence:
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
        seq = Sequence(
            prompt_ids=ids,
            max_new_tokens=max_new,
            sampler=TokenSampler(params, device=self.device),
            assembler=TextAssembler(loaded.tokenizer, tuple(params.stop)),
            num_beams=params.num_beams,
        )
        loaded.scheduler.submit(seq)
        return seq

    def stream(self, request: GenerationRequest) -> Iterator[StreamEvent]:
        seq = self._start(request)
        return self._events(seq)

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

    def generate(self, request: GenerationRequest) -> GenerationResult:
        for event in self.stream(request):
            if event.result is not None:
                return event.result
        raise InferenceError("the stream ended without a result")  # pragma: no cover - _events always ends with one

    def count_tokens(self, spec: ModelSpec, request: GenerationRequest) -> int:
        return len(self.prompt_ids(self.cache.get(spec), request))

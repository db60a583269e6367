"""Continuous batching: one scheduler thread owns each loaded model and decodes a batch that requests join.

Requests queue up; between decode steps the scheduler prefills the newcomers and merges their KV cache into the
running batch (left-padded), so requests that arrive while others decode join the batch at the next step.
Finished and cancelled sequences leave the batch at once.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from apps.inference.loading import LoadedModel
from apps.inference.sampling import TokenSampler
from apps.inference.textstream import TextAssembler
from apps.inference.types import (
    GenerationResult,
    ModelSpec,
    ModelUnavailable,
    StreamEvent,
)

logger = logging.getLogger(__name__)


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


"""Continuous batching: one scheduler thread owns each loaded model and decodes a batch that requests join.

Requests queue up; between decode steps the scheduler prefills the newcomers and merges their KV cache into the
running batch (left-padded), so requests that arrive while others decode join the batch at the next step.
Finished and cancelled sequences leave the batch at once.

Admission: each sequence costs slots (one; `num_beams` for beam search). With a `queue_limit`, `submit` refuses a
sequence that would take the model past `max_batch + queue_limit` slots running and waiting, with an
`EngineOverloaded` that says when to try again (an estimate from the recent step time and answer lengths).

Beam search runs in transformers' `generate` (it keeps `num_beams` hypotheses), one request at a time, and never
freezes the batch: between two of its steps the running batch takes a step of its own (and admits newcomers), so
a stream beside a beam search waits one beam step per token, not the whole search. A beam answer is at most
BEAM_MAX_NEW_TOKENS tokens (finish_reason `length` there), and a cancelled one stops at its next step.
"""

from __future__ import annotations

import heapq
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import DynamicCache, StoppingCriteria, StoppingCriteriaList

from apps.inference.loading import LoadedModel
from apps.inference.sampling import TokenSampler, beam_penalties
from apps.inference.textstream import TextAssembler
from apps.inference.types import (
    EngineOverloaded,
    GenerationResult,
    ModelSpec,
    ModelUnavailable,
    StreamEvent,
)

logger = logging.getLogger(__name__)

# The longest beam-search answer (tokens). A beam search runs one at a time per model, and while it runs each batch
# step also pays a beam step: the cap bounds how long a second beam request waits and the batch runs slower.
BEAM_MAX_NEW_TOKENS = 256
# Before anything is measured: seconds per decode step and tokens per answer, for Retry-After estimates.
FIRST_STEP_SECONDS = 0.05
FIRST_ANSWER_TOKENS = 64


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

    @property
    def cost(self) -> int:
        """Slots this sequence takes in admission: a beam search decodes num_beams rows."""
        return self.num_beams


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
        self._units = 0  # slots of the sequences submitted and not yet done (running, waiting, in a beam search)
        self.beam: Sequence | None = None  # the beam search running now
        self.beam_steps = 0
        self.step_seconds = FIRST_STEP_SECONDS  # moving averages, for Retry-After
        self.answer_tokens = float(FIRST_ANSWER_TOKENS)
        self.loaded: LoadedModel | None = None
        self.load_error: BaseException | None = None
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(loader,), name=f"batch-{spec.key}", daemon=True)
        self._thread.start()

    # --- called from request threads ---
    def submit(self, seq: Sequence, *, queue_limit: int | None = None) -> None:
        """Queue a sequence; with a `queue_limit`, refuse it (EngineOverloaded) when the model already has
        `max_batch + queue_limit` slots running and waiting. An idle model takes any one request."""
        with self._cv:
            if self._stopping:
                raise ModelUnavailable(f"{self.spec.key} is being unloaded; try again")
            capacity = self.max_batch + (queue_limit or 0)
            if queue_limit is not None and self._units and self._units + seq.cost > capacity:
                wait = self._wait_estimate(self._units + seq.cost - capacity)
                raise EngineOverloaded(
                    f"{self.spec.key} is busy ({self._units} sequences running or waiting, room for {capacity}): "
                    f"try again in {wait} s.",
                    retry_after=wait,
                )
            self._units += seq.cost
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
        """Slots taken by the sequences submitted and not done yet (running, waiting, in a beam search)."""
        return self._units

    def _wait_estimate(self, excess: int) -> int:
        """Seconds until `excess` slots are free (under the lock): the running sequences finish after their expected
        remaining tokens, the waiting ones take the first free rows in turn; a token costs the recent step time.
        Expected lengths come from recent answers, capped by each sequence's max_tokens."""

        def expected(seq: Sequence) -> float:
            left = seq.max_new_tokens - len(seq.generated)
            return max(1.0, min(left, self.answer_tokens - len(seq.generated)))

        running = [s for s in self.active if not s.done] + ([self.beam] if self.beam is not None else [])
        rows = [expected(s) for s in running][: self.max_batch]
        rows += [0.0] * (self.max_batch - len(rows))
        heapq.heapify(rows)
        ends = [(expected(s), s.cost) for s in running]
        for seq in self._waiting:
            start = heapq.heappop(rows)
            end = start + 1 + expected(seq)  # + its prefill
            heapq.heappush(rows, end)
            ends.append((end, seq.cost))
        freed, steps = 0, 0.0
        for end, cost in sorted(ends):
            freed, steps = freed + cost, end
            if freed >= excess:
                break
        return max(1, math.ceil(steps * self.step_seconds))

    # --- the scheduler thread ---
    def _run(self, loader) -> None:
        # The model is loaded by the thread that serves it. Measured here: a model loaded in one thread and
        # run in another decodes at half speed with the int8 kernel (OpenMP thread teams), loaded here at full.
        try:
            self.loaded = loader(self.spec)
        except BaseException as exc:  # noqa: BLE001 - handed to the request that waits for this load
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
                admitted = self._take(beams=True)
            self._turn([s for s in admitted if s.num_beams == 1 or s.cancelled.is_set()])
            for seq in admitted:
                if seq.num_beams > 1 and not seq.done:
                    self._beam_search_guarded(seq)

    def _take(self, *, beams: bool) -> list[Sequence]:
        """Under the lock: the waiting sequences that start now: as many as the batch has rows for, the cancelled
        ones (to be finished at once, wherever they were in the queue) and, when `beams`, the first beam search."""
        room = self.max_batch - len(self.active)
        taken, kept = [], deque()
        for seq in self._waiting:
            if seq.cancelled.is_set():
                taken.append(seq)
            elif seq.num_beams > 1:
                if beams:
                    taken.append(seq)
                    beams = False
                else:
                    kept.append(seq)
            elif room > 0:
                taken.append(seq)
                room -= 1
            else:
                kept.append(seq)
        self._waiting = kept
        return taken

    def _turn(self, admitted: list[Sequence]) -> None:
        """Prefill the newcomers into the batch and take one decode step; a failure fails the batch, not the thread."""
        try:
            with torch.inference_mode():
                self._admit(admitted)
                if self.active:
                    self._step()
        except Exception as exc:  # a failing step fails its sequences, never the thread
            logger.exception("generation step failed on %s", self.spec.key)
            error = ModelUnavailable(f"generation failed: {type(exc).__name__}: {exc}")
            for seq in self.active + admitted:
                self._fail(seq, error)
            self.active, self._cache, self._mask = [], None, None

    def _fail(self, seq: Sequence, error: Exception) -> None:
        if not seq.done:
            self._release(seq)
            seq.out.put(error)

    def _release(self, seq: Sequence) -> None:
        """The sequence is done: its slots are free for admission."""
        seq.done = True
        if self.beam is seq:
            self.beam = None  # gone together with its load: nobody sees a finished search as running
        with self._cv:
            self._units -= seq.cost

    def _admit(self, seqs: list[Sequence]) -> None:
        fresh = []
        for seq in seqs:
            if seq.cancelled.is_set():
                self._finish(seq, "cancelled")
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
        started = time.monotonic()
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
        self.step_seconds = 0.9 * self.step_seconds + 0.1 * (time.monotonic() - started)
        self._sample_and_prune(out.logits[:, -1, :], first_row=0)

    def _sample_and_prune(self, logits: torch.Tensor, *, first_row: int) -> None:
        logits = logits.float()
        # Row i of `logits` belongs to self.active[first_row + i] (a prefill has rows for the newcomers only).
        for row, seq in enumerate(self.active[first_row:]):
            history = None
            if seq.sampler.needs_history:
                history = (seq.prompt_ids if seq.sampler.params.penalize_prompt else []) + seq.generated
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
        self._release(seq)
        if reason != "cancelled":
            self.answer_tokens = 0.9 * self.answer_tokens + 0.1 * len(seq.generated)
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

    def _beam_search_guarded(self, seq: Sequence) -> None:
        self.beam = seq
        try:
            with torch.inference_mode():
                self._beam_search(seq)
        except Exception as exc:  # a failing beam search fails its request only
            logger.exception("beam search failed on %s", self.spec.key)
            self._fail(seq, ModelUnavailable(f"generation failed: {type(exc).__name__}: {exc}"))
        finally:
            self.beam = None

    def _beam_search(self, seq: Sequence) -> None:
        """Beam search in transformers' `generate` (it keeps several hypotheses per request); between two of its
        steps the batch takes a step (`_BeamTurn`), and a cancelled request stops at its next step."""
        p = seq.sampler.params
        ids = torch.tensor([seq.prompt_ids], device=self.loaded.device)
        eos = sorted(self.loaded.eos_ids)
        out = self.loaded.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            num_beams=seq.num_beams,
            do_sample=False,
            max_new_tokens=seq.max_new_tokens,
            **beam_penalties(p, prompt_length=len(seq.prompt_ids)),
            no_repeat_ngram_size=p.no_repeat_ngram_size or None,
            eos_token_id=eos,
            suppress_tokens=eos if p.ignore_eos else None,
            pad_token_id=self.loaded.tokenizer.pad_token_id,
            early_stopping=True,
            stopping_criteria=StoppingCriteriaList([_BeamTurn(self, seq)]),
        )
        if seq.cancelled.is_set():
            return self._finish(seq, "cancelled")
        for token in out[0, len(seq.prompt_ids) :].tolist():
            self._accept(seq, token)
            if seq.done:
                return None
        return self._finish(seq, "length" if len(seq.generated) >= seq.max_new_tokens else "stop")


class _BeamTurn(StoppingCriteria):
    """Called by `generate` after each beam step: the running batch takes its turn (newcomers join it; beam
    requests wait for this one), and the search stops when its request was cancelled."""

    def __init__(self, scheduler: BatchScheduler, seq: Sequence):
        self.scheduler, self.seq = scheduler, seq

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        scheduler = self.scheduler
        scheduler.beam_steps += 1
        with scheduler._cv:
            admitted = scheduler._take(beams=False)
        if admitted or scheduler.active:
            scheduler._turn(admitted)
        return torch.full((input_ids.shape[0],), self.seq.cancelled.is_set(), dtype=torch.bool, device=input_ids.device)

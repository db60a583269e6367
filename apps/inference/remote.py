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
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import AsyncIterator, Iterator

import httpx2
import openai

from apps.inference.types import (
    ContextLengthExceeded,
    EngineOverloaded,
    GenerationRequest,
    GenerationResult,
    InferenceError,
    InvalidSampling,
    ModelUnavailable,
    StreamEvent,
    TokenCount,
)

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0  # a model server on the same host or network answers a connect at once; a dead one fails fast
CHECK_TIMEOUT = 3.0  # /healthz's inference check: a probe answers quickly or counts as down


class RemoteEngine:
    def __init__(self, *, base_url: str, api_key: str = "", timeout: float = 300.0, context: int = 8192):
        """`base_url`: the server's OpenAI root (`http://host:port/v1`); `context`: the model's context length
        assumed when the server cannot count tokens (no /tokenize)."""
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

    # -- requests ----------------------------------------------------------------------------------------------

    def _arguments(self, request: GenerationRequest) -> dict:
        p = request.params.validate()
        args = {"model": request.model.key, "temperature": p.temperature, "top_p": p.top_p}
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

    def _call(self, args: dict, **more):
        try:
            return self._endpoint(self.client, args).create(**args, **more)
        except openai.APIError as exc:
            raise translate_error(exc) from exc

    def generate(self, request: GenerationRequest) -> GenerationResult:
        args = self._arguments(request)
        response = self._call(args)
        choice = response.choices[0]
        text = choice.message.content if "messages" in args else choice.text
        usage = response.usage
        return GenerationResult(
            text=text or "",
            finish_reason=_finish(choice.finish_reason),
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            model=request.model.key,
        )

    def stream(self, request: GenerationRequest) -> Iterator[StreamEvent]:
        """Starts the generation now (a refusal raises here); closing the iterator closes the connection, which
        cancels the generation on the server."""
        args = self._arguments(request)
        response = self._call(args, stream=True, stream_options={"include_usage": True})
        return _SyncEvents(response, _Collector(request, chat="messages" in args))

    async def astream(self, request: GenerationRequest) -> AsyncIterator[StreamEvent]:
        """The stream on the running event loop: awaiting it sends the request (a refusal raises here, before any
        event); `aclose()` on the iterator closes the HTTP response, so the server cancels at once."""
        args = self._arguments(request)
        try:
            response = await self._endpoint(self._async_client(), args).create(
                **args, stream=True, stream_options={"include_usage": True}
            )
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
            body = {"model": request.model.key, "add_special_tokens": False}  # as the engines encode a prompt
            if request.messages is not None:
                body.update(messages=request.messages, add_generation_prompt=True)
            else:
                body["prompt"] = request.prompt or ""
            try:
                answer = self.client.post(f"{self.root}/tokenize", body=body, cast_to=httpx2.Response)
                counted = answer.json()
                return TokenCount(int(counted["count"]), int(counted["max_model_len"]))
            except openai.APIStatusError as exc:
                if exc.status_code not in (404, 405) or _error_code(exc) == "model_not_found":
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

    # -- health ------------------------------------------------------------------------------------------------

    def check(self, model: str | None = None, *, timeout: float = CHECK_TIMEOUT) -> str:
        """Whether the server answers and can load `model` (a registry reference): the store's model server's
        `GET /health?model=...`; a server without it (vLLM has a bare /health, OpenAI none) must list its models.
        Returns what it found; raises InferenceError when the server is down or cannot load the model."""
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
            piece = (choice.delta.content if self.chat else choice.text) or ""
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


def _error_code(exc: openai.APIError) -> str | None:
    return _error_body(exc).get("code")


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


"""The model server: the local engine behind an OpenAI-compatible HTTP API (Starlette, no Django, no database).

Run as `python -m apps.inference.server` (one uvicorn process; `make run` and compose start it as `inference`). It
owns every loaded model: the web tier, on the remote engine, generates through it.

- Every endpoint but a bare `GET /health` wants `Authorization: Bearer <token>` (401 otherwise): the token web and
  server share (`INFERENCE_REMOTE_API_KEY`, or the one generated into `$STORE_DATA_DIR/inference_token`).
- `POST /v1/chat/completions`, `POST /v1/completions`: OpenAI's shapes, `stream` as server-sent events with
  `stream_options.include_usage`; extra body fields `top_k`, `repetition_penalty`, `no_repeat_ngram_size`,
  `num_beams`, `ignore_eos`, `penalize_prompt` (false: the penalties count the answer's tokens only); one choice
  per request (`n` > 1 is a 400: send n requests). A client that goes away (streaming or not) cancels its
  generation at once.
- `POST /tokenize` (vLLM's shape): `{"model", "messages" | "prompt", "add_generation_prompt": true,
  "add_special_tokens": false}` → `{"count", "max_model_len", "tokens"}`, counted as generation encodes the prompt.
- `POST /v1/classify` (the store's own): `{"model": <a classifier>, "input": text | [texts]}` →
  `{"object": "list", "model", "data": [{"index", "label", "scores": {label: probability}, "tokens"}], "usage"}`;
  always on transformers (apps/inference/classifier.py), whatever INFERENCE_ENGINE is; a classifier on the
  completion endpoints, or another model here, is a 400 that names the right endpoint.
- `GET /health`: `{"status": "ok"}` (liveness); `GET /health?model=<ref>` (token): loads the model or answers
  its error (404 unknown, 503 cannot load). `GET /v1/models` (token): the models loaded now.
- `model` is a registry reference `<id>@v<N>` (or `<id>` alone: its highest version), found on disk as
  `MODELS_REGISTRY_ROOT/<folder_for_model_id(id)>/<N>`; the folder must resolve inside the root (a symlink out is
  refused). An adapter folder (`adapter_config.json`) names its base in `base_model_name_or_path` by registry
  id or reference, resolved the same way; that base may be an adapter too (a fine-tune of a LoRA fine-tune), up to
  ADAPTER_CHAIN_MAX links, and the chain is merged from its root.
- Admission: each model takes `INFERENCE_MAX_BATCH` sequences at once and `INFERENCE_QUEUE_LIMIT` more waiting (a
  beam search counts `num_beams`); past that, 503 `engine_overloaded` with `Retry-After` (scheduler.py).
- Errors in OpenAI's shape `{"error": {"message", "type", "param", "code"}}`; one log line per request.
- Engine: `INFERENCE_ENGINE=transformers` (default: the local engine) or `llamacpp` (apps/inference/llamacpp.py:
  llama.cpp for every model it can serve, the transformers engine for the rest, chosen per model; `/health?model=`
  says which serves it).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from apps.core.errors import (
    InvalidRequest,
    NotFound,
    StoreError,
    error_body,
    error_body_for,
)
from apps.inference.classifier import ClassifierEngine, is_classifier_folder
from apps.inference.layout import ADAPTER_CHAIN_MAX, LayoutError, folder_for_model_id
from apps.inference.local import LocalEngine
from apps.inference.token import shared_token
from apps.inference.types import (
    GenerationRequest,
    GenerationResult,
    InvalidSampling,
    ModelSpec,
    ModelUnavailable,
    SamplingParams,
)

logger = logging.getLogger("apps.inference.server")

BASE_DIR = Path(__file__).resolve().parent.parent.parent
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}  # developer: OpenAI's newer system
REFERENCE = re.compile(r"^(?P<id>[^@]+?)(?:@v(?P<number>[0-9]+))?$")


# --- the registry, read from disk -------------------------------------------------------------------------------
class RegistryFolders:
    """Registry references to version folders, from the layout alone (no database): `<root>/<folder>/<N>/`."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()

    def spec(self, reference: str) -> ModelSpec:
        return self._spec(self._version(reference, param="model"), links=0)

    def _spec(self, spec: ModelSpec, *, links: int) -> ModelSpec:
        """An adapter with its base, itself an adapter for a fine-tune of a LoRA fine-tune (up to ADAPTER_CHAIN_MAX)."""
        if spec.kind != "lora":
            return spec
        if links >= ADAPTER_CHAIN_MAX:
            raise ModelUnavailable(f"{spec.key} sits on more than {ADAPTER_CHAIN_MAX} adapters: not servable.")
        try:
            config = json.loads((Path(spec.path) / "adapter_config.json").read_text())
            base_reference = config["base_model_name_or_path"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelUnavailable(f"{spec.key} is an adapter whose adapter_config.json names no base: {exc}") from exc
        try:
            base = self._version(str(base_reference), param="model")
        except NotFound as exc:
            raise ModelUnavailable(f"{spec.key} is an adapter on {base_reference!r}, which is not in the registry.") from exc
        return ModelSpec(key=spec.key, path=spec.path, kind="lora", base=self._spec(base, links=links + 1))

    def _version(self, reference: str, *, param: str) -> ModelSpec:
        match = REFERENCE.match(reference)
        if match is None or "\x00" in reference:
            raise NotFound(f"The model {reference!r} does not exist: the model server takes registry references "
                           "<id>@v<N> (aliases live in the store's database).", code="model_not_found", param=param)
        model_id = match["id"]
        try:
            model_dir = self.root / folder_for_model_id(model_id)  # one path component: never `..`, never absolute
        except LayoutError as exc:
            raise NotFound(f"The model {reference!r} does not exist.", code="model_not_found", param=param) from exc
        if match["number"] is not None:
            number = int(match["number"])
        else:  # no version named: the newest (hidden staging folders have no number)
            numbers = [int(p.name) for p in model_dir.iterdir() if p.name.isdigit()] if model_dir.is_dir() else []
            if not numbers:
                raise NotFound(f"The model {reference!r} does not exist.", code="model_not_found", param=param)
            number = max(numbers)
        folder = (model_dir / str(number)).resolve()
        if not folder.is_relative_to(self.root) or any(not p.resolve().is_relative_to(self.root) for p in _entries(folder)):
            logger.warning("refused %s: %s resolves outside the registry root %s", reference, folder, self.root)
            raise NotFound(f"The model {reference!r} does not exist (its folder is not inside the registry).",
                           code="model_not_found", param=param)
        if not folder.is_dir():
            raise NotFound(f"The model {reference!r} does not exist.", code="model_not_found", param=param)
        kind = "lora" if (folder / "adapter_config.json").is_file() else "full"
        return ModelSpec(key=f"{model_id}@v{number}", path=str(folder), kind=kind)


def _entries(folder: Path) -> list[Path]:
    return list(folder.iterdir()) if folder.is_dir() else []


# --- reading a request ------------------------------------------------------------------------------------------
async def _json_body(request: Request) -> dict:
    try:
        data = json.loads(await request.body())
    except ValueError as exc:
        raise InvalidRequest(f"The body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidRequest("The body must be a JSON object.")
    return data


def _number(data: dict, name: str, default: float) -> float:
    value = data.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidSampling(f"{name} must be a number.", param=name)
    return float(value)


def _whole(data: dict, name: str, default: int | None) -> int | None:
    value = data.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSampling(f"{name} must be a whole number.", param=name)
    return value


def _flag(data: dict, name: str, default: bool) -> bool:
    value = data.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidRequest(f"{name} must be true or false.", param=name)
    return value


def _stop(data: dict) -> tuple[str, ...]:
    value = data.get("stop")
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) and s for s in items) or len(items) > 4:
        raise InvalidSampling("stop takes a non-empty string or a list of up to 4 non-empty strings.", param="stop")
    return tuple(items)


def _params(data: dict, *, max_tokens_default: int | None) -> SamplingParams:
    n = _whole(data, "n", 1)
    if n != 1:
        raise InvalidRequest("The model server answers one choice per request (n=1): send n requests.", param="n")
    max_tokens = _whole(data, "max_completion_tokens", None)
    if max_tokens is None:
        max_tokens = _whole(data, "max_tokens", max_tokens_default)
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=_number(data, "temperature", 1.0),
        top_p=_number(data, "top_p", 1.0),
        top_k=_whole(data, "top_k", 0),
        stop=_stop(data),
        seed=_whole(data, "seed", None),
        repetition_penalty=_number(data, "repetition_penalty", 1.0),
        no_repeat_ngram_size=_whole(data, "no_repeat_ngram_size", 0),
        num_beams=_whole(data, "num_beams", 1),
        ignore_eos=_flag(data, "ignore_eos", False),
        penalize_prompt=_flag(data, "penalize_prompt", True),
    ).validate()


def _messages(data: dict) -> list[dict]:
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages must be a non-empty list of {role, content}.", param="messages")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise InvalidRequest(f"messages[{i}] needs a role: one of {', '.join(ROLES)}.", param="messages")
        content = message.get("content")
        if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                                             for p in content):
            content = "".join(p["text"] for p in content)  # OpenAI's content parts: text only here
        elif content is None:
            content = ""
        elif not isinstance(content, str):
            raise InvalidRequest(f"messages[{i}].content must be a string or a list of text parts.", param="messages")
        out.append({"role": ROLES[message["role"]], "content": content})
    return out


def _prompt(data: dict) -> str:
    prompt = data.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise InvalidRequest("prompt must be a string (one prompt per request).", param="prompt")
    return prompt


def _model_name(data: dict) -> str:
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model is required: a registry reference <id>@v<N>.", param="model")
    return model


# --- answers ----------------------------------------------------------------------------------------------------
def _error_response(exc: StoreError) -> JSONResponse:
    return JSONResponse(error_body_for(exc), status_code=exc.status, headers=dict(exc.headers))


def _usage(result: GenerationResult) -> dict:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "total_tokens": result.total_tokens}


def _finish(result: GenerationResult) -> str:
    return "length" if result.finish_reason == "length" else "stop"


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


class _Completion:
    """How one endpoint's answer looks: chat completions or plain completions."""

    def __init__(self, *, chat: bool, model: str):
        self.chat, self.model = chat, model
        self.meta = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", "created": int(time.time()), "model": model}

    def whole(self, result: GenerationResult) -> dict:
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": result.text}, "logprobs": None,
                      "finish_reason": _finish(result)}
        else:
            choice = {"index": 0, "text": result.text, "logprobs": None, "finish_reason": _finish(result)}
        return {**self.meta, "object": "chat.completion" if self.chat else "text_completion", "choices": [choice],
                "usage": _usage(result)}

    def chunk(self, delta: str | None, finish: str | None, *, include_usage: bool, first: bool = False) -> dict:
        if self.chat:
            body = {"role": "assistant", "content": delta or ""} if first else ({"content": delta} if delta else {})
            choice = {"index": 0, "delta": body, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": delta or "", "logprobs": None, "finish_reason": finish}
        chunk = {**self.meta, "object": "chat.completion.chunk" if self.chat else "text_completion", "choices": [choice]}
        if include_usage:
            chunk["usage"] = None  # as OpenAI: every chunk has the field, the last one alone a value
        return chunk

    def usage_chunk(self, result: GenerationResult) -> dict:
        return {**self.meta, "object": "chat.completion.chunk" if self.chat else "text_completion", "choices": [],
                "usage": _usage(result)}


class EventStreamResponse(StreamingResponse):
    """Server-sent events that stop the generation the moment the client goes: it listens for the disconnect
    whatever the server's ASGI version (Starlette's own, from ASGI 2.4, notices only at its next write) and closes
    the body iterator in every case (closing it cancels the sequence in the engine)."""

    media_type = "text/event-stream"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def stream() -> None:
                    try:
                        await self.stream_response(send)
                    except OSError:  # the client went while we wrote
                        pass
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()
        finally:
            await self.body_iterator.aclose()


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


# --- the app ----------------------------------------------------------------------------------------------------
class ModelServer:
    def __init__(self, engine: LocalEngine, *, registry_root: str | Path, classifier: ClassifierEngine | None = None):
        self.engine = engine
        self.registry = RegistryFolders(registry_root)
        self.classifier = classifier or ClassifierEngine()

    def _log(self, request: Request, model: str, status: int | str, started: float, result: GenerationResult | None = None,
             note: str = "") -> None:
        tokens = f" prompt={result.prompt_tokens} completion={result.completion_tokens} finish={result.finish_reason}" if result else ""
        logger.info("%s %s model=%s status=%s%s %.0fms%s", request.method, request.url.path, model or "-", status, tokens,
                    (time.monotonic() - started) * 1000, f" {note}" if note else "")

    async def chat_completions(self, request: Request):
        return await self._generate(request, chat=True)

    async def completions(self, request: Request):
        return await self._generate(request, chat=False)

    async def _generate(self, request: Request, *, chat: bool):
        started, model = time.monotonic(), ""
        try:
            data = await _json_body(request)
            model = _model_name(data)
            params = _params(data, max_tokens_default=None if chat else 16)  # OpenAI's default for completions: 16
            inputs = {"messages": _messages(data)} if chat else {"prompt": _prompt(data)}
            stream = _flag(data, "stream", False)
            options = data.get("stream_options") or {}
            if not isinstance(options, dict):
                raise InvalidRequest("stream_options must be an object.", param="stream_options")
            include_usage = bool(options.get("include_usage"))
            spec = self.registry.spec(model)
            if is_classifier_folder(spec.path):
                raise InvalidRequest(f"{model} is a classifier: it labels text on /v1/classify, it does not generate.",
                                     param="model", code="model_is_classifier")
            events = await self.engine.astream(GenerationRequest(model=spec, params=params, **inputs))
        except StoreError as exc:
            self._log(request, model, exc.status, started, note=exc.code)
            return _error_response(exc)
        answer = _Completion(chat=chat, model=model)
        if stream:
            return EventStreamResponse(self._events(request, events, answer, include_usage, started),
                                       headers={"Cache-Control": "no-cache"})
        return await self._whole(request, events, answer, started)

    async def _whole(self, request: Request, events: AsyncIterator, answer: _Completion, started: float):
        """The complete answer; a client that goes away first cancels the generation (uvicorn would let it run)."""

        async def last_result() -> GenerationResult:
            try:
                async for event in events:
                    if event.result is not None:
                        return event.result
                raise ModelUnavailable("the stream ended without a result")  # pragma: no cover - engines end with one
            finally:
                await events.aclose()

        collect = asyncio.ensure_future(last_result())
        gone = asyncio.ensure_future(_until_disconnect(request.receive))
        try:
            await asyncio.wait({collect, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not collect.done():
                collect.cancel()  # the client left (or this handler was cancelled): its finally closes the stream
                await asyncio.gather(collect, return_exceptions=True)
                self._log(request, answer.model, "gone", started, note="cancelled")
        if collect.cancelled():
            return JSONResponse(error_body("The client went away.", status=499), status_code=499)
        try:
            result = collect.result()
        except StoreError as exc:
            self._log(request, answer.model, exc.status, started, note=exc.code)
            return _error_response(exc)
        self._log(request, answer.model, 200, started, result)
        return JSONResponse(answer.whole(result))

    async def _events(self, request: Request, events: AsyncIterator, answer: _Completion, include_usage: bool,
                      started: float) -> AsyncIterator[str]:
        result, status = None, "gone"
        try:
            if answer.chat:  # the assistant's role comes first, as OpenAI sends it
                yield _sse(answer.chunk("", None, include_usage=include_usage, first=True))
            async for event in events:
                if event.delta:
                    yield _sse(answer.chunk(event.delta, None, include_usage=include_usage))
                if event.result is not None:
                    result = event.result
            yield _sse(answer.chunk(None, _finish(result), include_usage=include_usage))
            if include_usage:
                yield _sse(answer.usage_chunk(result))
            yield "data: [DONE]\n\n"
            status = 200
        except StoreError as exc:  # the stream had started: the error goes as an event (as vLLM and OpenAI do)
            status = exc.status
            yield _sse(error_body_for(exc))
        finally:
            await events.aclose()  # a client gone: the sequence is cancelled here
            self._log(request, answer.model, status, started, result, note="stream")

    async def classify(self, request: Request):
        started, model = time.monotonic(), ""
        try:
            data = await _json_body(request)
            model = _model_name(data)
            spec = self.registry.spec(model)
            if not is_classifier_folder(spec.path):
                raise InvalidRequest(f"{model} is not a classifier: generate with it on /v1/chat/completions.",
                                     param="model", code="model_not_classifier")
            results = await asyncio.to_thread(self.classifier.classify, spec, data.get("input"))
        except StoreError as exc:
            self._log(request, model, exc.status, started, note=exc.code)
            return _error_response(exc)
        tokens = sum(r.tokens for r in results)
        self._log(request, model, 200, started, note=f"texts={len(results)} tokens={tokens}")
        return JSONResponse({"object": "list", "model": model,
                             "data": [{"index": i, **r.as_dict()} for i, r in enumerate(results)],
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def tokenize(self, request: Request):
        started, model = time.monotonic(), ""
        try:
            data = await _json_body(request)
            model = _model_name(data)
            if ("messages" in data) == ("prompt" in data):
                raise InvalidRequest("Send either messages or prompt.", param="messages")
            inputs = {"messages": _messages(data)} if "messages" in data else {"prompt": _prompt(data)}
            flags = {"add_generation_prompt": _flag(data, "add_generation_prompt", True),
                     "add_special_tokens": _flag(data, "add_special_tokens", False)}
            spec = self.registry.spec(model)
            ids, context = await asyncio.to_thread(self.engine.token_ids, GenerationRequest(model=spec, **inputs), **flags)
        except StoreError as exc:
            self._log(request, model, exc.status, started, note=exc.code)
            return _error_response(exc)
        self._log(request, model, 200, started, note=f"count={len(ids)}")
        return JSONResponse({"count": len(ids), "max_model_len": context, "tokens": ids})

    async def health(self, request: Request):
        model = request.query_params.get("model")
        if model is None:
            return JSONResponse({"status": "ok"})
        started = time.monotonic()
        try:
            spec = self.registry.spec(model)
            await asyncio.to_thread(self.engine.token_ids, GenerationRequest(model=spec, prompt=""))  # loads it
        except StoreError as exc:
            self._log(request, model, exc.status, started, note=exc.code)
            return _error_response(exc)
        self._log(request, model, 200, started)
        served_by = getattr(self.engine, "served_by", lambda spec: "transformers")(spec)
        return JSONResponse({"status": "ok", "model": spec.key, "engine": served_by})

    async def models(self, request: Request):
        data = [{"id": m.spec.key, "object": "model", "created": _created(m.spec.path), "owned_by": "store"}
                for m in self.engine.cache.loaded()]
        return JSONResponse({"object": "list", "data": data})


def _created(path: str) -> int:
    """When the version folder was made (the registry writes it once), 0 if it has gone since it was loaded."""
    try:
        return int(Path(path).stat().st_mtime)
    except OSError:
        return 0


class TokenGuard:
    """Every request but a bare `GET /health` carries `Authorization: Bearer <token>` (compared in constant time)."""

    def __init__(self, app: ASGIApp, *, token: str):
        self.app, self.token = app, token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._open(scope) and not self._authorized(scope):
            body = error_body("A valid model server token is required: Authorization: Bearer <token>.", status=401,
                              code="invalid_api_key")
            await JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
            return
        await self.app(scope, receive, send)

    @staticmethod
    def _open(scope: Scope) -> bool:
        return scope["path"] == "/health" and "model" not in parse_qs(scope.get("query_string", b"").decode("latin-1"),
                                                                   keep_blank_values=True)

    def _authorized(self, scope: Scope) -> bool:
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, given = header.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), self.token)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request")
    return JSONResponse(error_body(str(exc.detail), status=exc.status_code, code=code), status_code=exc.status_code,
                        headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("%s %s failed", request.method, request.url.path)
    return JSONResponse(error_body(f"The model server failed: {type(exc).__name__}.", status=500, code="server_error"),
                        status_code=500)


def create_app(engine: LocalEngine, *, registry_root: str | Path, token: str, queue_limit: int | None = None) -> Starlette:
    """The ASGI app over `engine`. `queue_limit`, when given, becomes the engine's admission bound (requests that
    may wait per model beyond its running batch); None keeps the engine's own."""
    if not token:
        raise ValueError("the model server needs a token (INFERENCE_REMOTE_API_KEY or the shared token file)")
    if queue_limit is not None:
        engine.queue_limit = queue_limit
    server = ModelServer(engine, registry_root=registry_root, classifier=getattr(engine, "classifier", None))
    routes = [
        Route("/v1/chat/completions", server.chat_completions, methods=["POST"]),
        Route("/v1/completions", server.completions, methods=["POST"]),
        Route("/v1/classify", server.classify, methods=["POST"]),
        Route("/v1/models", server.models, methods=["GET"]),
        Route("/tokenize", server.tokenize, methods=["POST"]),
        Route("/health", server.health, methods=["GET"]),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(TokenGuard, token=token)],
                    exception_handlers={HTTPException: _http_error, Exception: _server_error})
    app.state.server = server
    return app


# --- the process ------------------------------------------------------------------------------------------------
def _read_dotenv(path: Path) -> None:
    """The `.env` that settings.py reads, read the same way (a variable already set wins), without Django."""
    if not path.is_file():
        return
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        os.environ.setdefault(name.strip(), value)


def main() -> None:
    import uvicorn  # the process's entry point only: importing the app (tests) needs no server

    _read_dotenv(BASE_DIR / ".env")
    env = os.environ
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data_dir = Path(env.get("STORE_DATA_DIR") or BASE_DIR / "var")
    engine = LocalEngine(
        dtype=env.get("INFERENCE_DTYPE", "bfloat16"),
        max_cache_bytes=int(env.get("INFERENCE_CACHE_BYTES", 2 * 2**30)),
        max_batch=int(env.get("INFERENCE_MAX_BATCH", 16)),
        num_threads=int(env.get("TORCH_NUM_THREADS", 0)),
        quantize=env.get("INFERENCE_QUANTIZE", "int8"),
        queue_limit=int(env.get("INFERENCE_QUEUE_LIMIT", 32)),
    )
    choice = env.get("INFERENCE_ENGINE", "transformers")
    if choice == "llamacpp":
        # Imported here: llama-cpp-python is an optional extra (make install-llamacpp), loaded only when chosen.
        from apps.inference.llamacpp import EngineByModel, LlamaCppEngine, gguf_for

        quant = env.get("INFERENCE_GGUF_QUANT", "q8_0")
        engine = EngineByModel(LlamaCppEngine(max_cache_bytes=engine.cache.max_bytes, max_batch=engine.max_batch,
                                              num_threads=int(env.get("TORCH_NUM_THREADS", 0)),
                                              queue_limit=engine.queue_limit, gguf=lambda spec: gguf_for(spec, quant)),
                               fallback=engine)
    elif choice != "transformers":
        raise SystemExit(f"INFERENCE_ENGINE must be 'transformers' or 'llamacpp', not {choice!r}")
    app = create_app(
        engine,
        registry_root=env.get("MODELS_REGISTRY_ROOT") or BASE_DIR / "models_registry",
        token=env.get("INFERENCE_REMOTE_API_KEY") or shared_token(data_dir),
    )
    _preload(app.state.server, env.get("INFERENCE_PRELOAD", "smollm2-135m-instruct"))
    host, port = env.get("INFERENCE_HOST", "127.0.0.1"), int(env.get("INFERENCE_PORT", 8001))
    logger.info("model server on http://%s:%d (engine %s, registry %s, queue limit %s)", host, port, choice,
                app.state.server.registry.root, engine.queue_limit)
    try:
        # loop/http "auto": uvloop and httptools (installed); one log line per request is ours, not uvicorn's.
        uvicorn.run(app, host=host, port=port, access_log=False, log_level="info", timeout_graceful_shutdown=5)
    finally:
        engine.close()


def _preload(server, references: str) -> None:
    """Load these models (comma-separated; `<id>` is its newest version) while the server starts answering, so the
    first request and the store's /healthz don't wait out a load. One that is missing is logged, not fatal."""

    def load():
        for reference in filter(None, (r.strip() for r in references.split(","))):
            try:
                server.engine.token_ids(GenerationRequest(model=server.registry.spec(reference), prompt=""))
                logger.info("preloaded %s", reference)
            except StoreError as exc:
                logger.warning("could not preload %s: %s", reference, exc.message)

    threading.Thread(target=load, name="preload", daemon=True).start()


if __name__ == "__main__":
    main()

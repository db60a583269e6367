"""OpenAI-compatible /v1: the official `openai` client works against it unchanged.

Thin views: validate with a serializer, call the inference service, shape the answer as OpenAI does. Completions
here are stateless: nothing of the conversation is kept.
"""

from __future__ import annotations

import abc
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace

from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.limits import quotas_for, request_take, tokens_add
from apps.api.authentication import BearerAPIKeyAuthentication
from apps.api.openai_serializers import ChatCompletionSerializer, CompletionSerializer
from apps.api.schema import OpenAISchema
from apps.core.errors import InvalidRequest
from apps.core.streaming import sse_event, sse_response
from apps.inference.services import engine_get, generation_request_build
from apps.inference.types import GenerationResult, InferenceError
from apps.registry.selectors import registered_model_get, registered_model_list


class OpenAIView(APIView):
    authentication_classes = [BearerAPIKeyAuthentication]
    permission_classes = [IsAuthenticated]
    schema = OpenAISchema()
    request_serializer = None  # the body a POST takes (for the OpenAPI schema)


def model_object(model) -> dict:
    return {
        "id": model.name,
        "object": "model",
        "created": int(model.created_at.timestamp()),
        "owned_by": "system" if model.owner_id is None else model.owner.username,
    }


def app_object(app) -> dict:
    return {
        "id": f"app:{app.slug}",
        "object": "model",
        "created": int((app.published_at or app.created_at).timestamp()),
        "owned_by": app.creator.username if app.creator_id else "system",
    }


class ModelListView(OpenAIView):
    """Base models, the caller's fine-tunes, and the apps the caller may use (public ones and their own)."""

    def get(self, request):
        from apps.catalog.models import StoreApp
        from apps.catalog.selectors import app_catalog

        listed = list(app_catalog().order_by("slug"))
        own = StoreApp.objects.filter(creator=request.user).exclude(pk__in=[a.pk for a in listed]).order_by("slug")
        apps = listed + list(own)
        data = [model_object(m) for m in registered_model_list(user=request.user)] + [app_object(a) for a in apps]
        return Response({"object": "list", "data": data})


class ModelDetailView(OpenAIView):
    def get(self, request, model_id):
        if model_id.startswith("app:"):
            return Response(app_object(_app(request, model_id)))
        return Response(model_object(registered_model_get(name=model_id, user=request.user)))


def _app(request, model: str):
    """The app a `model="app:<slug>"` names, if the caller may use it (link-only apps too); 404 otherwise."""
    from apps.catalog.selectors import app_get
    from apps.core.errors import NotFound

    try:
        return app_get(slug=model.removeprefix("app:"), user=request.user)
    except NotFound as exc:
        raise NotFound(f"The model {model!r} does not exist.", code="model_not_found", param="model") from exc


def _usage(results: list[GenerationResult]) -> dict:
    prompt = results[0].prompt_tokens if results else 0
    completion = sum(r.completion_tokens for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _finish(result: GenerationResult) -> str:
    return "length" if result.finish_reason == "length" else "stop"


class _CompletionBase(OpenAIView, abc.ABC):
    """Chat completions and completions share validation, limits, generation, streaming and usage; the
    subclasses say what the request holds and how a choice looks."""

    serializer_class = None
    object_name = ""
    id_prefix = ""

    @abc.abstractmethod
    def request_kwargs(self, data) -> dict:
        """The generation request's input: `messages` or `prompt`."""

    @abc.abstractmethod
    def choice(self, index: int, result: GenerationResult) -> dict:
        """One choice of the complete answer."""

    @abc.abstractmethod
    def chunk_choice(self, index: int, delta: str, finish: str | None, first: bool) -> dict:
        """One choice of a streamed chunk."""

    def post(self, request):
        serializer = self.serializer_class(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        params = serializer.sampling_params()
        app = None
        if data["model"].startswith("app:"):
            if not isinstance(self, ChatCompletionView):
                raise InvalidRequest("Apps answer on /v1/chat/completions.", param="model")
            from apps.chat.services import app_chat_request

            app = _app(request, data["model"])
            given = set(request.data) | ({"max_tokens"} if "max_completion_tokens" in request.data else set())
            generation = app_chat_request(app=app, messages=self.request_kwargs(data)["messages"], given=given, params=params,
                                          extra={k: request.data.get(k) for k in ("target_language", "source_language")})
        else:
            generation = generation_request_build(user=request.user, reference=data["model"], params=params, **self.request_kwargs(data))
        quotas = quotas_for(user=request.user, api_key=request.auth)
        limit_headers = request_take(quotas=quotas)  # 429 here, before any generation, when over a limit
        engine = engine_get()
        n = data.get("n") or 1
        streams = []
        for i in range(n):  # all n start now, so the engine decodes them together
            chosen = generation.params
            seeded = replace(chosen, seed=chosen.seed + i) if chosen.seed is not None else chosen
            streams.append(engine.stream(replace(generation, params=seeded)))
        meta = {"id": f"{self.id_prefix}-{uuid.uuid4().hex}", "created": int(time.time()), "model": data["model"]}
        def record(results):
            from apps.chat.services import usage_record

            usage_record(user=request.user, api_key=request.auth, app=app, results=results)
            tokens_add(quotas=quotas, tokens=sum(r.total_tokens for r in results))

        if data.get("stream"):
            response = sse_response(request, lambda: self._event_stream(streams, meta, serializer.include_usage, record))
        else:
            results = [_drain(s) for s in streams]
            record(results)
            response = Response(
                {**meta, "object": self.object_name, "choices": [self.choice(i, r) for i, r in enumerate(results)], "usage": _usage(results)}
            )
        for name, value in limit_headers.items():
            response[name] = value
        return response

    def _event_stream(self, streams, meta, include_usage: bool, record) -> Iterator[str]:
        base = {**meta, "object": f"{self.object_name}.chunk"}
        results = []
        try:
            for index, stream in enumerate(streams):
                first = True
                for event in stream:
                    if event.delta or first:
                        yield sse_event({**base, "choices": [self.chunk_choice(index, event.delta, None, first)]})
                        first = False
                    if event.result is not None:
                        results.append(event.result)
                        yield sse_event({**base, "choices": [self.chunk_choice(index, "", _finish(event.result), False)]})
            record(results)
            if include_usage:
                yield sse_event({**base, "choices": [], "usage": _usage(results)})
            yield "data: [DONE]\n\n"
        except InferenceError as exc:
            yield sse_event({"error": {"message": exc.message, "type": "server_error", "param": exc.param, "code": exc.code}})
        finally:
            for stream in streams:
                stream.close()  # a client that went away frees its slots in the engine


def _drain(stream) -> GenerationResult:
    for event in stream:
        if event.result is not None:
            return event.result
    raise InferenceError("generation ended without a result")


class ChatCompletionView(_CompletionBase):
    serializer_class = request_serializer = ChatCompletionSerializer
    object_name = "chat.completion"
    id_prefix = "chatcmpl"

    def request_kwargs(self, data) -> dict:
        return {"messages": [{"role": m["role"], "content": m["content"]} for m in data["messages"]]}

    def choice(self, index, result):
        return {
            "index": index,
            "message": {"role": "assistant", "content": result.text},
            "logprobs": None,
            "finish_reason": _finish(result),
        }

    def chunk_choice(self, index, delta, finish, first):
        body = {"role": "assistant", "content": delta} if first else ({"content": delta} if delta else {})
        return {"index": index, "delta": body, "logprobs": None, "finish_reason": finish}


class CompletionView(_CompletionBase):
    serializer_class = request_serializer = CompletionSerializer
    object_name = "text_completion"
    id_prefix = "cmpl"

    def request_kwargs(self, data) -> dict:
        return {"prompt": data["prompt"]}

    def choice(self, index, result):
        return {"index": index, "text": result.text, "logprobs": None, "finish_reason": _finish(result)}

    def chunk_choice(self, index, delta, finish, first):
        return {"index": index, "text": delta, "logprobs": None, "finish_reason": finish}

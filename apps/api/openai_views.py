"""OpenAI-compatible /v1: the official `openai` client works against it unchanged.

Thin views: validate with a serializer, call the run service (the same one as the pages and /api/v1), shape the
answer as OpenAI does. Completions here are stateless: nothing of the conversation is kept, usage is.
"""

from __future__ import annotations

import abc
import time
import uuid

from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.api.authentication import BearerAPIKeyAuthentication
from apps.api.openai_serializers import ChatCompletionSerializer, CompletionSerializer
from apps.api.schema import OpenAISchema
from apps.catalog.access import access_app
from apps.catalog.models import StoreApp
from apps.catalog.selectors import app_catalog
from apps.chat import services as chat_services
from apps.core.errors import InvalidRequest, NotFound, StoreError
from apps.core.streaming import map_events, sse_events, sse_response, streams_async
from apps.inference.types import GenerationResult
from apps.registry.selectors import registered_model_get, registered_model_list
from apps.registry.services import registered_model_delete_owned

APP_PREFIX = "app:"


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
        "id": f"{APP_PREFIX}{app.address}",  # a link-only app's address holds its token
        "object": "model",
        "created": int((app.published_at or app.created_at).timestamp()),
        "owned_by": app.creator.username if app.creator_id else "system",
    }


class ModelListView(OpenAIView):
    """Base models, the caller's fine-tunes, and the apps the caller may use (public ones and their own)."""

    def get(self, request):
        listed = list(app_catalog().order_by("slug"))
        own = StoreApp.objects.filter(creator=request.user).exclude(pk__in=[a.pk for a in listed]).order_by("slug")
        apps = listed + list(own)
        data = [model_object(m) for m in registered_model_list(user=request.user)] + [app_object(a) for a in apps]
        return Response({"object": "list", "data": data})


class ModelDetailView(OpenAIView):
    def get(self, request, model_id):
        if model_id.startswith(APP_PREFIX):
            return Response(app_object(_app(request, model_id)))
        return Response(model_object(registered_model_get(name=model_id, user=request.user)))

    def delete(self, request, model_id):
        """Delete one of the caller's fine-tunes (OpenAI's answer); another user's or an unknown model is a 404, a
        base model a 403, and a model that an app, a job or a fine-tune depends on a 409. Its files leave the
        registry once the deletion is committed."""
        if model_id.startswith(APP_PREFIX):
            _app(request, model_id)  # a 404 for an app the caller may not use
            raise InvalidRequest("An app is not deleted as a model: delete it in the builder or with DELETE /api/v1/apps/{slug}/.",
                                 param="model")
        model = registered_model_get(name=model_id, user=request.user)
        registered_model_delete_owned(registered_model=model, user=request.user)
        return Response({"id": model.name, "object": "model", "deleted": True})


def _app(request, model: str):
    """The app a `model="app:<slug>"` names, if the caller may use it (link-only apps too); 404 otherwise."""
    try:
        return access_app(user=request.user, slug=model.removeprefix(APP_PREFIX))
    except NotFound as exc:
        raise NotFound(f"The model {model!r} does not exist.", code="model_not_found", param="model") from exc


def _finish(result: GenerationResult) -> str:
    """OpenAI's finish reasons: `length`, `content_filter` (the leak guard stopped it) or `stop`."""
    return result.finish_reason if result.finish_reason in ("length", "content_filter") else "stop"


# The translator's languages: fields of the body beside OpenAI's (the client sends them with `extra_body`), named
# as the run service names them.
TRANSLATOR_FIELDS = {"target_language": "target", "source_language": "source"}


class _CompletionBase(OpenAIView, abc.ABC):
    """Chat completions and completions: parse, call the run service, shape the answer as OpenAI does. The
    subclasses say what the request holds and how a choice looks."""

    serializer_class = None
    object_name = ""
    id_prefix = ""

    @abc.abstractmethod
    def request_kwargs(self, data) -> dict:
        """The generation's input: `messages` or `prompt`."""

    @abc.abstractmethod
    def choice(self, index: int, result: GenerationResult) -> dict:
        """One choice of the complete answer."""

    @abc.abstractmethod
    def chunk_choice(self, index: int, delta: str, finish: str | None, first: bool) -> dict:
        """One choice of a streamed chunk."""

    def start(self, request, serializer) -> chat_services.Run:
        data = serializer.validated_data
        caller = chat_services.Caller(request.user, api_key=request.auth)
        n = data.get("n") or 1
        stream_async = bool(data.get("stream")) and streams_async(request)
        if not data["model"].startswith(APP_PREFIX):
            return chat_services.model_run_start(caller=caller, reference=data["model"], params=serializer.sampling_params(),
                                                 n=n, stream_async=stream_async, **self.request_kwargs(data))
        app = _app(request, data["model"])
        chat_services.generating_app_check(app)  # a classifier app: a 400 that names its endpoint
        if not isinstance(self, ChatCompletionView):
            raise InvalidRequest("Apps answer on /v1/chat/completions.", param="model")
        extra = request.data if isinstance(request.data, dict) else {}
        inputs = {name: extra.get(field) or "" for field, name in TRANSLATOR_FIELDS.items()}
        inputs["target"] = inputs["target"] or "English"  # DESIGN: the translator's target is English by default
        try:
            return chat_services.app_run_start(caller=caller, app=app, messages=self.request_kwargs(data)["messages"],
                                               inputs=inputs, overrides=serializer.sampling_overrides(), n=n,
                                               stream_async=stream_async)
        except StoreError as exc:  # name the body's field, not the service's
            exc.param = {name: field for field, name in TRANSLATOR_FIELDS.items()}.get(exc.param, exc.param)
            raise

    def post(self, request):
        serializer = self.serializer_class(data=request.data)
        serializer.is_valid(raise_exception=True)
        run = self.start(request, serializer)
        meta = {"id": f"{self.id_prefix}-{uuid.uuid4().hex}", "created": int(time.time()), "model": serializer.validated_data["model"]}
        if serializer.validated_data.get("stream"):
            chunks = map_events(chat_services.run_stream(run), _Chunks(self, meta, serializer.include_usage))
            response = sse_response(request, sse_events(chunks, end="[DONE]"))
        else:
            done = chat_services.run_collect(run).done
            response = Response({**meta, "object": self.object_name,
                                 "choices": [self.choice(i, r) for i, r in enumerate(done.results)], "usage": done.usage,
                                 **_sources(done)})
        for name, value in run.limit_headers.items():
            response[name] = value
        return response


def _sources(done: chat_services.Done) -> dict:
    """An `app:` run's knowledge passages, in a field of our own (`sources`: OpenAI's client ignores it, and keeps
    it in `model_extra`); nothing for a run without any."""
    return {"sources": [source.public() for source in done.sources]} if done.sources else {}


class _Chunks:
    """A run's events as OpenAI's streamed chunks (`<object>.chunk`): a first chunk per choice with the role, the
    text as it comes, a last chunk with its finish reason, then the usage if the caller asked for it."""

    def __init__(self, view: _CompletionBase, meta: dict, include_usage: bool):
        self.view, self.include_usage = view, include_usage
        self.base = {**meta, "object": f"{view.object_name}.chunk"}
        self.started: set[int] = set()

    def __call__(self, event) -> list[dict]:
        if isinstance(event, chat_services.Delta):
            return [self.chunk(event.index, event.text, None)]
        if isinstance(event, chat_services.ChoiceEnd):
            first = [] if event.index in self.started else [self.chunk(event.index, "", None)]
            return [*first, self.chunk(event.index, "", _finish(event.result))]
        if isinstance(event, chat_services.Done):
            # An app's knowledge passages in a chunk of their own (no choices, as the usage chunk), before the usage.
            sources = [{**self.base, "choices": [], **_sources(event)}] if event.sources else []
            return sources + ([{**self.base, "choices": [], "usage": event.usage}] if self.include_usage else [])
        return []

    def chunk(self, index: int, delta: str, finish: str | None) -> dict:
        first = index not in self.started
        self.started.add(index)
        return {**self.base, "choices": [self.view.chunk_choice(index, delta, finish, first)]}


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

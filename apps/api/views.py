"""The store's own REST API (/api/v1): apps, reviews, runs, conversations, files, jobs, models, usage.

Thin views over the same selectors and services as the pages: validate with an input serializer, call one
service or selector, shape the answer with an output serializer. Every queryset is scoped to what the caller may
see, and another user's object is a 404. Errors have one shape, `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

from django.http import FileResponse
from django.db.models import Avg, Count, F, IntegerField
from django.db.models.functions import Cast
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.authentication import SessionAuthentication
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.limits import quotas_for, request_take, tokens_add
from apps.accounts.selectors import usage_summary
from apps.api import serializers as s
from apps.api.authentication import BearerAPIKeyAuthentication
from apps.api.pagination import StoreCursorPagination
from apps.catalog import selectors as catalog_selectors
from apps.catalog import services as catalog_services
from apps.catalog.models import AppVersion, Category, Review, StoreApp, VERSIONED_FIELDS
from apps.chat import services as chat_services
from apps.chat.models import AppRun, Conversation
from apps.core.errors import Forbidden, InvalidRequest, NotFound
from apps.core.streaming import sse_events, sse_response
from apps.registry import selectors as registry_selectors
from apps.registry import services as registry_services
from apps.registry.models import ModelAlias, ModelAliasMove, ModelVersion, RegisteredModel
from apps.tuning import selectors as tuning_selectors
from apps.tuning import services as tuning_services
from apps.tuning.models import FineTuningJob, TrainingFile


class StoreAPIMixin:
    """Bearer keys for programs, the session (with CSRF) for the browser; logged-in callers only."""

    authentication_classes = [BearerAPIKeyAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated]
    pagination_class = StoreCursorPagination
    cursor_ordering: tuple[str, ...] | None = None

    def paged(self, queryset, serializer_class, *, ordering: tuple[str, ...]):
        self.cursor_ordering = ordering
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(serializer_class(page, many=True, context=self.get_serializer_context()).data)


def _bool(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


# --- Apps ---------------------------------------------------------------------------------------------------
APP_FILTERS = [
    OpenApiParameter("q", str, description="Search words (name, descriptions, category), ranked by relevance."),
    OpenApiParameter("category", str, description="A category slug."),
    OpenApiParameter("kind", str, enum=StoreApp.Kind.values),
    OpenApiParameter("featured", bool),
    OpenApiParameter("creator", str, description="A creator's username."),
    OpenApiParameter("mine", bool, description="The caller's own apps, drafts and private ones included."),
]


class AppViewSet(StoreAPIMixin, viewsets.GenericViewSet):
    """Apps in the store. Anyone logged in reads the catalog and link-shared apps; creators change their own."""

    serializer_class = s.AppSerializer
    lookup_field = "slug"
    lookup_value_regex = "[-a-zA-Z0-9_]+"

    def get_queryset(self):  # for the schema; every action below goes through a scoped selector
        return StoreApp.objects.none()

    def _owned(self, slug) -> StoreApp:
        return catalog_selectors.app_get_owned(slug=slug, user=self.request.user)

    def _visible(self, slug) -> StoreApp:
        return catalog_selectors.app_get(slug=slug, user=self.request.user)

    def _app_response(self, app, code=status.HTTP_200_OK):
        return Response(s.AppSerializer(app, context=self.get_serializer_context()).data, status=code)

    @extend_schema(parameters=APP_FILTERS)
    def list(self, request):
        params = request.query_params
        if _bool(params.get("mine")):
            apps = catalog_selectors.app_list_owned(user=request.user).annotate(
                rating=Avg("reviews__rating"), review_count=Count("reviews", distinct=True))
            ordering = ("-updated_at", "-id")
        elif params.get("q", "").strip():
            apps, ordering = catalog_selectors.app_search(query=params["q"]), ("-published_at", "-id")
            if "rank" in apps.query.annotations:
                # The cursor holds the position as text; a float4 rank read back from text no longer equals
                # itself, and pages would repeat. An integer key compares exactly.
                apps = apps.annotate(relevance=Cast(F("rank") * 1_000_000, IntegerField()))
                ordering = ("-relevance", "-id")
        else:
            apps, ordering = catalog_selectors.app_catalog(), ("-published_at", "-id")
        if params.get("category"):
            apps = apps.filter(category__slug=params["category"])
        if params.get("kind"):
            if params["kind"] not in StoreApp.Kind.values:
                raise InvalidRequest(f"kind is one of: {', '.join(StoreApp.Kind.values)}.", param="kind")
            apps = apps.filter(kind=params["kind"])
        if _bool(params.get("featured")):
            apps = apps.filter(is_featured=True)
        if params.get("creator"):
            apps = apps.filter(creator__username=params["creator"])
        return self.paged(apps, s.AppSerializer, ordering=ordering)

    def retrieve(self, request, slug):
        return self._app_response(self._visible(slug))

    @extend_schema(request=s.AppInputSerializer, responses={201: s.AppSerializer})
    def create(self, request):
        serializer = s.AppInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = {"kind": StoreApp.Kind.CHATBOT, **serializer.validated_data}
        return self._app_response(catalog_services.app_create(user=request.user, data=data), status.HTTP_201_CREATED)

    @extend_schema(request=s.AppInputSerializer, responses=s.AppSerializer)
    def partial_update(self, request, slug):
        app = self._owned(slug)
        serializer = s.AppInputSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        # The service takes the whole app: what the request leaves out keeps its value.
        current = {f: getattr(app, f) for f in VERSIONED_FIELDS if f not in ("visibility", "input_fields")}
        data = current | {"category": app.category} | serializer.validated_data
        return self._app_response(catalog_services.app_update(app=app, user=request.user, data=data))

    def destroy(self, request, slug):
        catalog_services.app_delete(app=self._owned(slug), user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=s.PublishSerializer, responses=s.AppSerializer)
    @action(detail=True, methods=["post"])
    def publish(self, request, slug):
        app = self._owned(slug)
        serializer = s.PublishSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return self._app_response(catalog_services.app_publish(app=app, user=request.user, **serializer.validated_data))

    @extend_schema(request=None, responses={201: s.AppSerializer})
    @action(detail=True, methods=["post"])
    def remix(self, request, slug):
        """Copy a public app into a private draft of the caller's own."""
        copy = catalog_services.app_remix(app=self._visible(slug), user=request.user)
        return self._app_response(copy, status.HTTP_201_CREATED)

    @extend_schema(responses=s.AppVersionSerializer(many=True))
    @action(detail=True, methods=["get"], serializer_class=s.AppVersionSerializer)
    def versions(self, request, slug):
        """The app's settings each time they were saved (its creator only)."""
        versions = AppVersion.objects.filter(app=self._owned(slug)).select_related("created_by")
        return self.paged(versions, s.AppVersionSerializer, ordering=("-number",))

    @extend_schema(request=None, responses=s.AppSerializer)
    @action(detail=True, methods=["post"], url_path=r"versions/(?P<number>[0-9]+)/restore")
    def restore(self, request, slug, number):
        app = catalog_services.app_version_restore(app=self._owned(slug), user=request.user, number=int(number))
        return self._app_response(app)

    @extend_schema(methods=["GET"], responses=s.ReviewSerializer(many=True))
    @extend_schema(methods=["POST"], request=s.ReviewInputSerializer, responses=s.ReviewSerializer,
                   description="Rate the app; a second review by the same user replaces the first.")
    @extend_schema(methods=["DELETE"], request=None, responses={204: None}, description="Delete the caller's review.")
    @action(detail=True, methods=["get", "post", "delete"], serializer_class=s.ReviewSerializer)
    def reviews(self, request, slug):
        app = self._visible(slug)
        if request.method == "GET":
            return self.paged(Review.objects.filter(app=app).select_related("user", "app"), s.ReviewSerializer,
                              ordering=("-updated_at", "-id"))
        if request.method == "DELETE":
            catalog_services.review_delete(app=app, user=request.user)
            return Response(status=status.HTTP_204_NO_CONTENT)
        serializer = s.ReviewInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        review = catalog_services.review_save(app=app, user=request.user, **serializer.validated_data)
        return Response(s.ReviewSerializer(review).data)

    @extend_schema(request=s.ReportInputSerializer, responses={201: inline_serializer("ReportCreated", {"id": serializers.IntegerField()})})
    @action(detail=True, methods=["post"])
    def report(self, request, slug):
        """Flag the app for a moderator."""
        app = self._visible(slug)
        serializer = s.ReportInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        report = catalog_services.report_create(app=app, user=request.user, **serializer.validated_data)
        return Response({"id": report.pk}, status=status.HTTP_201_CREATED)

    @extend_schema(
        request=s.AppRunInputSerializer,
        responses={200: s.AppRunResultSerializer, (200, "text/event-stream"): OpenApiTypes.STR},
        description="Run the app with its inputs. With `stream: true` the answer comes as server-sent events: "
        '`{"delta": text}` pieces, maybe a `{"notice": ...}`, then `{"done": true, "usage": ...}`.',
    )
    @action(detail=True, methods=["post"])
    def runs(self, request, slug):
        app = self._visible(slug)
        serializer = s.AppRunInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        inputs = dict(serializer.validated_data)
        stream = inputs.pop("stream")
        quotas = quotas_for(user=request.user, api_key=request.auth)
        limit_headers = request_take(quotas=quotas)  # a 429 here, before any generation, when over a limit
        run = chat_services.app_run_start(app=app, user=request.user, session=request.session, inputs=inputs, api_key=request.auth)

        def events():
            for event in chat_services.run_events(run):
                if event.get("done"):
                    tokens_add(quotas=quotas, tokens=sum(event["usage"].values()))
                yield event

        if stream:
            response = sse_response(request, lambda: sse_events(events()))
        else:
            text, notice, done = [], None, {}
            for event in events():
                text.append(event.get("delta", ""))
                notice = event.get("notice", notice)
                done = event if event.get("done") else done
            response = Response({"app": app.slug, "text": "".join(text), "finish_reason": done.get("finish_reason"),
                                 "conversation": done.get("conversation"), "notice": notice, "usage": done.get("usage")})
        for name, value in limit_headers.items():
            response[name] = value
        return response


class CategoryViewSet(StoreAPIMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    queryset = Category.objects.all()
    serializer_class = s.CategorySerializer
    pagination_class = None  # a handful, in the store's order


# --- Runs and conversations ---------------------------------------------------------------------------------
class RunViewSet(StoreAPIMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """The caller's runs of apps and models (pages, /v1 and this API): tokens per run, the basis of usage."""

    serializer_class = s.AppRunSerializer
    cursor_ordering = ("-created_at", "-id")

    @extend_schema(parameters=[OpenApiParameter("app", str, description="An app slug.")])
    def list(self, request):
        return super().list(request)

    def get_queryset(self):
        runs = AppRun.objects.filter(user=self.request.user).select_related("app", "api_key")
        if self.request.query_params.get("app"):
            runs = runs.filter(app__slug=self.request.query_params["app"])
        return runs


class ConversationViewSet(StoreAPIMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin,
                          viewsets.GenericViewSet):
    """The caller's conversations with chatbot apps. Go on with one by running its app with `conversation`."""

    serializer_class = s.ConversationSerializer
    cursor_ordering = ("-updated_at", "-id")
    http_method_names = ["get", "patch", "delete", "head", "options"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema generator has no user
            return Conversation.objects.none()
        conversations = Conversation.objects.filter(user=self.request.user).select_related("app")
        if self.request.query_params.get("app"):
            conversations = conversations.filter(app__slug=self.request.query_params["app"])
        return conversations

    @extend_schema(parameters=[OpenApiParameter("app", str, description="An app slug.")])
    def list(self, request):
        return super().list(request)

    @extend_schema(request=s.ConversationInputSerializer, responses=s.ConversationSerializer)
    def partial_update(self, request, pk):
        serializer = s.ConversationInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        conversation = chat_services.conversation_rename(conversation=self.get_object(), **serializer.validated_data)
        return Response(s.ConversationSerializer(conversation).data)

    def perform_destroy(self, instance):
        chat_services.conversation_delete(conversation=instance)

    @extend_schema(responses=s.ConversationMessageSerializer(many=True))
    @action(detail=True, methods=["get"], serializer_class=s.ConversationMessageSerializer)
    def messages(self, request, pk):
        return self.paged(self.get_object().messages.all(), s.ConversationMessageSerializer, ordering=("created_at", "id"))


# --- Customization ------------------------------------------------------------------------------------------
class FileViewSet(StoreAPIMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """Training data: chat or prompt/completion JSONL, or plain text. Validated on upload (status `processed`,
    or `error` with line-numbered problems)."""

    serializer_class = s.TrainingFileSerializer
    parser_classes = [MultiPartParser, FormParser]
    lookup_value_regex = "file-[0-9a-f]+"

    def get_queryset(self):
        return TrainingFile.objects.filter(owner=self.request.user)

    def _file(self, pk) -> TrainingFile:
        return tuning_selectors.training_file_get(user=self.request.user, public_id=pk)

    @extend_schema(request={"multipart/form-data": s.TrainingFileInputSerializer}, responses={201: s.TrainingFileSerializer})
    def create(self, request):
        serializer = s.TrainingFileInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        f = tuning_services.training_file_create(owner=request.user, upload=serializer.validated_data["file"])
        return Response(s.TrainingFileSerializer(f).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request, pk):
        return Response(s.TrainingFileSerializer(self._file(pk)).data)

    def destroy(self, request, pk):
        tuning_services.training_file_delete(training_file=self._file(pk))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY})
    @action(detail=True, methods=["get"])
    def content(self, request, pk):
        f = self._file(pk)
        return FileResponse(f.file.open("rb"), content_type="application/octet-stream", as_attachment=True, filename=f.filename)

    def perform_content_negotiation(self, request, force=False):
        # The raw file goes back whatever the client accepts.
        return super().perform_content_negotiation(request, force=force or self.action == "content")


class JobViewSet(StoreAPIMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """Fine-tuning jobs: LoRA, full fine-tuning or continued pre-training, run by a worker on the gpu queue."""

    serializer_class = s.JobSerializer
    parser_classes = [JSONParser]
    lookup_value_regex = "ftjob-[0-9a-f]+"

    def get_queryset(self):
        jobs = FineTuningJob.objects.filter(owner=self.request.user).select_related("training_file", "validation_file")
        if self.request.query_params.get("status"):
            jobs = jobs.filter(status=self.request.query_params["status"])
        return jobs

    @extend_schema(parameters=[OpenApiParameter("status", str, enum=FineTuningJob.Status.values)])
    def list(self, request):
        return super().list(request)

    def _job(self, pk) -> FineTuningJob:
        return tuning_selectors.finetune_job_get(user=self.request.user, public_id=pk)

    @extend_schema(request=s.JobInputSerializer, responses={201: s.JobSerializer})
    def create(self, request):
        serializer = s.JobInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        try:
            training = self._file(data["training_file"])
            validation = self._file(data["validation_file"]) if data.get("validation_file") else None
        except NotFound as exc:
            raise NotFound(exc.message, param="training_file", code="file_not_found") from exc
        job = tuning_services.finetune_job_create(
            owner=request.user, training_file=training, validation_file=validation, model=data["model"], method=data["method"],
            hyperparameters=data.get("hyperparameters"), suffix=data["suffix"], seed=data.get("seed"),
        )
        return Response(s.JobSerializer(job).data, status=status.HTTP_201_CREATED)

    def _file(self, public_id) -> TrainingFile:
        return tuning_selectors.training_file_get(user=self.request.user, public_id=public_id)

    def retrieve(self, request, pk):
        return Response(s.JobSerializer(self._job(pk)).data)

    @extend_schema(request=None, responses=s.JobSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk):
        job = tuning_services.finetune_job_cancel(job=self._job(pk))
        return Response(s.JobSerializer(self._job(job.public_id)).data)

    @extend_schema(responses=s.JobEventSerializer(many=True))
    @action(detail=True, methods=["get"], serializer_class=s.JobEventSerializer)
    def events(self, request, pk):
        return self.paged(self._job(pk).events.all(), s.JobEventSerializer, ordering=("-created_at", "-id"))

    @extend_schema(responses=s.JobMetricSerializer(many=True))
    @action(detail=True, methods=["get"], serializer_class=s.JobMetricSerializer)
    def metrics(self, request, pk):
        """Loss, learning rate and speed per step: the loss curve."""
        return self.paged(self._job(pk).metrics.all(), s.JobMetricSerializer, ordering=("step", "id"))


# --- Registry -----------------------------------------------------------------------------------------------
class RegisteredModelViewSet(StoreAPIMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """The model registry: the store's models and the caller's fine-tunes, their versions and aliases."""

    serializer_class = s.RegisteredModelSerializer
    lookup_field = "name"
    lookup_value_regex = "[^/@]+"  # ids hold ':' (`ft:<base>:<owner>:<suffix>:<job-id>`), never '@'
    cursor_ordering = ("name",)

    def get_queryset(self):
        return registry_selectors.registered_model_list(user=self.request.user)

    def _model(self, name) -> RegisteredModel:
        return registry_selectors.registered_model_get(name=name, user=self.request.user)

    def _owned(self, name) -> RegisteredModel:
        model = self._model(name)
        if model.owner_id != self.request.user.pk:
            raise Forbidden("Only a model's owner can change it; the store's own models change through the admin.",
                            code="not_owner")
        return model

    def retrieve(self, request, name):
        return Response(s.RegisteredModelSerializer(self._model(name)).data)

    def destroy(self, request, name):
        """Delete one of the caller's fine-tunes (refused while an app runs on it)."""
        registry_services.registered_model_delete_owned(registered_model=self._owned(name), user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(responses=s.ModelVersionSerializer(many=True))
    @action(detail=True, methods=["get"], serializer_class=s.ModelVersionSerializer)
    def versions(self, request, name):
        versions = ModelVersion.objects.filter(registered_model=self._model(name)).select_related(
            "registered_model", "base_version__registered_model").prefetch_related("aliases")
        return self.paged(versions, s.ModelVersionSerializer, ordering=("-number",))

    @extend_schema(responses=s.ModelVersionSerializer)
    @action(detail=True, methods=["get"], url_path=r"versions/(?P<number>[0-9]+)", serializer_class=s.ModelVersionSerializer)
    def version(self, request, name, number):
        version = ModelVersion.objects.filter(registered_model=self._model(name), number=int(number)).first()
        if version is None:
            raise NotFound(f"{name} has no version {number}.", code="version_not_found")
        return Response(s.ModelVersionSerializer(version).data)

    @extend_schema(responses=s.ModelAliasSerializer(many=True))
    @action(detail=True, methods=["get"], serializer_class=s.ModelAliasSerializer, pagination_class=None)
    def aliases(self, request, name):
        aliases = ModelAlias.objects.filter(registered_model=self._model(name)).select_related("version")
        return Response(s.ModelAliasSerializer(aliases, many=True).data)

    @extend_schema(request=s.ModelAliasInputSerializer, responses=s.ModelAliasSerializer,
                   description="Point an alias (new or existing) at a version; every move is recorded.")
    @action(detail=True, methods=["put"], url_path=r"aliases/(?P<alias>[a-z0-9][a-z0-9_-]{0,63})", serializer_class=s.ModelAliasSerializer)
    def alias(self, request, name, alias):
        model = self._owned(name)
        serializer = s.ModelAliasInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        number = serializer.validated_data["version"]
        version = model.versions.filter(number=number).first()
        if version is None:
            raise NotFound(f"{name} has no version {number}.", param="version", code="version_not_found")
        moved = registry_services.model_alias_move(version=version, alias=alias, moved_by=request.user)
        return Response(s.ModelAliasSerializer(moved).data)

    @extend_schema(responses=s.ModelAliasMoveSerializer(many=True))
    @action(detail=True, methods=["get"], url_path="alias-moves", serializer_class=s.ModelAliasMoveSerializer)
    def alias_moves(self, request, name):
        moves = ModelAliasMove.objects.filter(registered_model=self._model(name)).select_related("from_version", "to_version", "moved_by")
        return self.paged(moves, s.ModelAliasMoveSerializer, ordering=("-moved_at", "-id"))


# --- Account ------------------------------------------------------------------------------------------------
class UsageView(StoreAPIMixin, APIView):
    """Requests and tokens of the last days, per app or model and per API key."""

    @extend_schema(responses=s.UsageSerializer)
    def get(self, request):
        summary = usage_summary(user=request.user)

        def row(name, r):
            return {"name": name, "requests": r["requests"], "prompt_tokens": r["prompt"] or 0, "completion_tokens": r["completion"] or 0}

        totals = summary["totals"]
        return Response({
            "days": summary["days"], "requests": totals["requests"], "prompt_tokens": totals["prompt"] or 0,
            "completion_tokens": totals["completion"] or 0,
            "by_app_or_model": [row(r["app__name"] or r["model"], r) for r in summary["by_target"]],
            "by_key": [row(f"{r['api_key__name']} ({r['api_key__prefix']}…)", r) for r in summary["by_key"]],
        })


class MeView(StoreAPIMixin, APIView):
    """Who the key or session belongs to."""

    @extend_schema(responses=inline_serializer("Me", {"username": serializers.CharField(), "email": serializers.EmailField(),
                                                      "date_joined": serializers.DateTimeField(), "key": serializers.CharField(allow_null=True)}))
    def get(self, request):
        user = request.user
        return Response({"username": user.username, "email": user.email, "date_joined": user.date_joined,
                         "key": getattr(request.auth, "name", None)})  # None for a browser session


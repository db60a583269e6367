"""/api/v1: Apps in the store, their versions, reviews, reports and runs; categories."""

from __future__ import annotations

import copy

from django.core.cache import cache
from django.db import transaction
from django.db.models import Avg, Count, F, IntegerField
from django.db.models.functions import Cast
from django.utils.translation import get_language
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.api import serializers as s
from apps.api.native.base import StoreAPIMixin, bool_param
from apps.catalog import selectors as catalog_selectors
from apps.catalog import services as catalog_services
from apps.catalog.access import access_app, access_app_owned
from apps.catalog.generation import catalog_generation
from apps.catalog.models import VERSIONED_FIELDS, AppVersion, Category, Review, StoreApp
from apps.chat import services as chat_services
from apps.core.errors import InvalidRequest
from apps.core.streaming import sse_events, sse_response, streams_async

APP_FILTERS = [
    OpenApiParameter("q", str, description="Search words (name, descriptions, category), ranked by relevance."),
    OpenApiParameter("category", str, description="A category slug."),
    OpenApiParameter("kind", str, enum=StoreApp.Kind.values),
    OpenApiParameter("featured", bool),
    OpenApiParameter("creator", str, description="A creator's username."),
    OpenApiParameter("mine", bool, description="The caller's own apps, drafts and private ones included."),
]


CATALOG_PAGE_SECONDS = 300  # a bound on an entry's life; the generation counter is what keeps pages fresh
OWNER_FIELDS = ("instructions", "prompt_template", "secret_strings")  # shown to an app's creator only


def _shared(data, user):
    """The page as any caller sees it: the caller's own apps lose their private fields."""
    shared = copy.deepcopy(data)
    for row in shared["results"]:
        if row["creator"] is not None and row["creator"] == user.get_username():
            row.update(dict.fromkeys(OWNER_FIELDS))
    return shared


def _with_owner_fields(page, user):
    """A cached page for this caller: their own apps get their private fields back, read fresh."""
    mine = [row["slug"] for row in page["results"] if row["creator"] is not None and row["creator"] == user.get_username()]
    if mine:
        private = {row["slug"]: row for row in StoreApp.objects.filter(slug__in=mine, creator=user).values("slug", *OWNER_FIELDS)}
        for row in page["results"]:
            if row["slug"] in private:
                row.update({field: private[row["slug"]][field] for field in OWNER_FIELDS})
    return page


class AppViewSet(StoreAPIMixin, viewsets.GenericViewSet):
    """Apps in the store. Anyone logged in reads the catalog and link-shared apps; creators change their own."""

    serializer_class = s.AppSerializer
    lookup_field = "slug"
    lookup_value_regex = "[-a-zA-Z0-9_]+"

    def get_queryset(self):  # for the schema; every action below goes through a scoped selector
        return StoreApp.objects.none()

    def _owned(self, slug) -> StoreApp:
        """For writes: 404 for an app the caller may not see, 403 for one they see but do not own."""
        return access_app_owned(user=self.request.user, slug=slug)

    def _visible(self, slug) -> StoreApp:
        return access_app(user=self.request.user, slug=slug)

    def _app_response(self, app, code=status.HTTP_200_OK):
        return Response(s.AppSerializer(app, context=self.get_serializer_context()).data, status=code)

    @extend_schema(parameters=APP_FILTERS)
    def list(self, request):
        params = request.query_params
        if bool_param(params.get("mine")):
            apps = catalog_selectors.app_list_owned(user=request.user).annotate(
                rating=Avg("reviews__rating"), review_count=Count("reviews", distinct=True))
            return self.paged(apps, s.AppSerializer, ordering=("-updated_at", "-id"))
        return self._catalog_page(request)

    def _catalog_page(self, request):
        """A page of the catalog, the same for every caller but for their own apps' private fields: kept under the
        catalog's generation counter (apps/catalog/generation.py), so a page is rebuilt only after a change that
        it shows. Building one is most of a catalog read's time (an aggregate query and 10 rows to serialize)."""
        key = f"api-catalog:{catalog_generation()}:{get_language()}:{request.build_absolute_uri()}"
        page = cache.get(key)
        if page is None:
            response = self._catalog_list(request)
            # Inside a transaction the counter may still move back (a rollback): nothing is kept from there.
            if not transaction.get_connection().in_atomic_block:
                cache.set(key, _shared(response.data, request.user), CATALOG_PAGE_SECONDS)
            return response
        return Response(_with_owner_fields(page, request.user))

    def _catalog_list(self, request):
        params = request.query_params
        if params.get("q", "").strip():
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
        if bool_param(params.get("featured")):
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
        '`{"delta": text}` pieces, maybe a `{"notice": ...}`, then `{"done": true, "usage": ...}`. A classifier app '
        'takes `text` and answers one JSON object: `{"app", "label", "scores": {label: probability}, "usage", "run"}`.',
    )
    @action(detail=True, methods=["post"])
    def runs(self, request, slug):
        app = self._visible(slug)
        serializer = s.AppRunInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        inputs = dict(serializer.validated_data)
        stream = inputs.pop("stream")
        if app.kind == StoreApp.Kind.CLASSIFIER:  # one forward pass: JSON whatever `stream` says
            outcome = chat_services.app_classify(caller=chat_services.Caller(request.user, api_key=request.auth), app=app,
                                                 text=inputs.get("text", ""))
            return Response({"app": app.slug, **outcome.public()}, headers=outcome.limit_headers)
        run = chat_services.app_run_start(caller=chat_services.Caller(request.user, api_key=request.auth), app=app,
                                          inputs=inputs, stream_async=stream and streams_async(request))
        if stream:
            response = sse_response(request, sse_events(chat_services.run_app_events(run)))
        else:
            outcome = chat_services.run_collect(run)
            response = Response({"app": app.slug, "text": outcome.texts[0], "notice": outcome.notice,
                                 **outcome.done.app_summary()})
        for name, value in run.limit_headers.items():
            response[name] = value
        return response


class CategoryViewSet(StoreAPIMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    queryset = Category.objects.all()
    serializer_class = s.CategorySerializer
    pagination_class = None  # a handful, in the store's order

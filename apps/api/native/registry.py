"""/api/v1: The model registry: models, versions, aliases and their moves."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.api import serializers as s
from apps.api.native.base import StoreAPIMixin
from apps.registry import services as registry_services
from apps.registry.models import (
    ModelAlias,
    ModelAliasMove,
    ModelVersion,
)
from apps.registry.selectors import (
    access_model_version,
    access_registered_model,
    access_registered_model_owned,
    model_version_numbered,
    registered_model_list,
)


class RegisteredModelViewSet(StoreAPIMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """The model registry: the store's models and the caller's fine-tunes, their versions and aliases."""

    serializer_class = s.RegisteredModelSerializer
    lookup_field = "name"
    lookup_value_regex = "[^/@]+"  # ids hold ':' (`ft:<base>:<owner>:<suffix>:<job-id>`), never '@'
    cursor_ordering = ("name",)

    def get_queryset(self):
        return registered_model_list(user=self.request.user)

    def retrieve(self, request, name):
        model = access_registered_model(user=request.user, name=name)
        return Response(s.RegisteredModelSerializer(model).data)

    def destroy(self, request, name):
        """Delete one of the caller's fine-tunes (refused while an app runs on it)."""
        model = access_registered_model_owned(user=request.user, name=name)
        registry_services.registered_model_delete_owned(registered_model=model, user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(responses=s.ModelVersionSerializer(many=True))
    @action(detail=True, methods=["get"], serializer_class=s.ModelVersionSerializer)
    def versions(self, request, name):
        model = access_registered_model(user=request.user, name=name)
        versions = ModelVersion.objects.filter(registered_model=model).select_related(
            "registered_model", "base_version__registered_model").prefetch_related("aliases")
        return self.paged(versions, s.ModelVersionSerializer, ordering=("-number",))

    @extend_schema(responses=s.ModelVersionSerializer)
    @action(detail=True, methods=["get"], url_path=r"versions/(?P<number>[0-9]+)", serializer_class=s.ModelVersionSerializer)
    def version(self, request, name, number):
        version = access_model_version(user=request.user, name=name, number=int(number))
        return Response(s.ModelVersionSerializer(version).data)

    @extend_schema(responses=s.ModelAliasSerializer(many=True))
    @action(detail=True, methods=["get"], serializer_class=s.ModelAliasSerializer, pagination_class=None)
    def aliases(self, request, name):
        model = access_registered_model(user=request.user, name=name)
        aliases = ModelAlias.objects.filter(registered_model=model).select_related("version")
        return Response(s.ModelAliasSerializer(aliases, many=True).data)

    @extend_schema(request=s.ModelAliasInputSerializer, responses=s.ModelAliasSerializer,
                   description="Point an alias (new or existing) at a version; every move is recorded.")
    @action(detail=True, methods=["put"], url_path=r"aliases/(?P<alias>[a-z0-9][a-z0-9_-]{0,63})", serializer_class=s.ModelAliasSerializer)
    def alias(self, request, name, alias):
        model = access_registered_model_owned(user=request.user, name=name)  # 404 or 403 before the body is read
        serializer = s.ModelAliasInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        version = model_version_numbered(registered_model=model, number=serializer.validated_data["version"],
                                         param="version")
        moved = registry_services.model_alias_move(version=version, alias=alias, moved_by=request.user)
        return Response(s.ModelAliasSerializer(moved).data)

    @extend_schema(responses=s.ModelAliasMoveSerializer(many=True))
    @action(detail=True, methods=["get"], url_path="alias-moves", serializer_class=s.ModelAliasMoveSerializer)
    def alias_moves(self, request, name):
        model = access_registered_model(user=request.user, name=name)
        moves = ModelAliasMove.objects.filter(registered_model=model).select_related("from_version", "to_version", "moved_by")
        return self.paged(moves, s.ModelAliasMoveSerializer, ordering=("-moved_at", "-id"))

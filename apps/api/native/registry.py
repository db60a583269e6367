"""/api/v1: The model registry: models, versions, aliases and their moves."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.api import serializers as s
from apps.api.native.base import StoreAPIMixin
from apps.core.errors import Forbidden, NotFound
from apps.registry import selectors as registry_selectors
from apps.registry import services as registry_services
from apps.registry.models import (
    ModelAlias,
    ModelAliasMove,
    ModelVersion,
    RegisteredModel,
)


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

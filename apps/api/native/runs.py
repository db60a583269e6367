"""/api/v1: The caller's runs and conversations."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from apps.api import serializers as s
from apps.api.native.base import StoreAPIMixin
from apps.chat import conversations as chat_conversations
from apps.chat.models import AppRun, Conversation


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
        conversation = chat_conversations.conversation_rename(conversation=self.get_object(), **serializer.validated_data)
        return Response(s.ConversationSerializer(conversation).data)

    def perform_destroy(self, instance):
        chat_conversations.conversation_delete(conversation=instance)

    @extend_schema(responses=s.ConversationMessageSerializer(many=True))
    @action(detail=True, methods=["get"], serializer_class=s.ConversationMessageSerializer)
    def messages(self, request, pk):
        return self.paged(self.get_object().messages.all(), s.ConversationMessageSerializer, ordering=("created_at", "id"))

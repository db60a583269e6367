"""/api/v1: An app's knowledge files, for its creator alone (anyone else: 404, the app's files are not theirs to
see even when they may use the app). Metadata and indexing status only: no endpoint returns a file's content."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from apps.api import serializers as s
from apps.api.native.base import StoreAPIMixin
from apps.knowledge import services as knowledge_services
from apps.knowledge.models import KnowledgeFile
from apps.knowledge.selectors import access_knowledge_app, access_knowledge_file, knowledge_file_list


class KnowledgeFileViewSet(StoreAPIMixin, viewsets.GenericViewSet):
    """Files an app answers from (plain text, Markdown, HTML, PDF), each indexed by a worker: `status` goes
    `uploaded` → `indexing` (with `progress`) → `ready`, or `error` with a `message`."""

    serializer_class = s.KnowledgeFileSerializer
    parser_classes = [MultiPartParser, FormParser]

    def get_queryset(self):  # for the schema; every action goes through the access helpers
        return KnowledgeFile.objects.none()

    def list(self, request, slug):
        app = access_knowledge_app(user=request.user, slug=slug)
        return self.paged(knowledge_file_list(app=app), s.KnowledgeFileSerializer, ordering=("name", "id"))

    @extend_schema(request={"multipart/form-data": s.KnowledgeFileInputSerializer}, responses={201: s.KnowledgeFileSerializer})
    def create(self, request, slug):
        app = access_knowledge_app(user=request.user, slug=slug)
        serializer = s.KnowledgeFileInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        knowledge = knowledge_services.knowledge_file_upload(app=app, user=request.user,
                                                             upload=serializer.validated_data["file"])
        return Response(s.KnowledgeFileSerializer(knowledge).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request, slug, pk):
        return Response(s.KnowledgeFileSerializer(access_knowledge_file(user=request.user, slug=slug, file_id=pk)).data)

    def destroy(self, request, slug, pk):
        knowledge_services.knowledge_file_delete(knowledge=access_knowledge_file(user=request.user, slug=slug, file_id=pk))
        return Response(status=status.HTTP_204_NO_CONTENT)

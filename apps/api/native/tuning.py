"""/api/v1: Customization: training files and fine-tuning jobs."""

from __future__ import annotations

from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response

from apps.api import serializers as s
from apps.api.native.base import StoreAPIMixin
from apps.api.schema import JOB_METADATA_PARAMETER
from apps.core.errors import NotFound
from apps.tuning import services as tuning_services
from apps.tuning.models import FineTuningJob, TrainingFile
from apps.tuning.selectors import (
    access_job,
    access_training_file,
    finetune_job_list,
    job_checkpoint_list,
    job_metadata_query,
    training_file_list,
)


class FileViewSet(StoreAPIMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """Training data: chat or prompt/completion JSONL, or plain text. Validated on upload (status `processed`,
    or `error` with line-numbered problems)."""

    serializer_class = s.TrainingFileSerializer
    parser_classes = [MultiPartParser, FormParser]
    lookup_value_regex = "file-[0-9a-f]+"

    def get_queryset(self):
        return training_file_list(user=self.request.user)

    def _file(self, pk) -> TrainingFile:
        return access_training_file(user=self.request.user, public_id=pk)

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
        params = self.request.query_params
        return finetune_job_list(user=self.request.user, status=params.get("status"), **job_metadata_query(params))

    @extend_schema(parameters=[OpenApiParameter("status", str, enum=FineTuningJob.Status.values), JOB_METADATA_PARAMETER])
    def list(self, request):
        return super().list(request)

    def _job(self, pk) -> FineTuningJob:
        return access_job(user=self.request.user, public_id=pk)

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
            metadata=data.get("metadata"), register_as=data.get("register_as") or None,
        )
        return Response(s.JobSerializer(job).data, status=status.HTTP_201_CREATED)

    def _file(self, public_id) -> TrainingFile:
        return access_training_file(user=self.request.user, public_id=public_id)

    def retrieve(self, request, pk):
        return Response(s.JobSerializer(self._job(pk)).data)

    @extend_schema(request=None, responses=s.JobSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk):
        return Response(s.JobSerializer(tuning_services.finetune_job_cancel(job=self._job(pk))).data)

    @extend_schema(responses=s.JobEventSerializer(many=True))
    @action(detail=True, methods=["get"], serializer_class=s.JobEventSerializer)
    def events(self, request, pk):
        return self.paged(self._job(pk).events.all(), s.JobEventSerializer, ordering=("-created_at", "-id"))

    @extend_schema(responses=s.JobCheckpointSerializer(many=True))
    @action(detail=True, methods=["get"], serializer_class=s.JobCheckpointSerializer)
    def checkpoints(self, request, pk):
        """The job's kept checkpoints (the models of its last three epochs), each callable by its model id."""
        return self.paged(job_checkpoint_list(job=self._job(pk)), s.JobCheckpointSerializer, ordering=("step", "id"))

    @extend_schema(responses=s.JobMetricSerializer(many=True))
    @action(detail=True, methods=["get"], serializer_class=s.JobMetricSerializer)
    def metrics(self, request, pk):
        """Loss, learning rate and speed per step: the loss curve."""
        return self.paged(self._job(pk).metrics.all(), s.JobMetricSerializer, ordering=("step", "id"))

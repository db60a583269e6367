"""OpenAI's Files and Fine-tuning APIs over the customization services (same code path as the pages)."""

from __future__ import annotations

from django.http import FileResponse
from rest_framework import serializers
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response

from apps.api.openai_views import OpenAIView
from apps.core.errors import InvalidRequest, NotFound
from apps.tuning import services
from apps.tuning.models import FineTuningJob, JobEvent, JobMetric, TrainingFile
from apps.tuning.selectors import finetune_job_get, training_file_get

METHOD_TYPES = {"supervised": "lora", "lora": "lora", "full": "full", "pretrain": "pretrain"}


def _ts(dt) -> int | None:
    return int(dt.timestamp()) if dt else None


def file_object(f: TrainingFile) -> dict:
    details = "; ".join(f"line {p['line']}: {p['message']}" if p.get("line") else p["message"] for p in f.problems) or None
    return {
        "id": f.public_id, "object": "file", "bytes": f.bytes, "created_at": _ts(f.created_at), "filename": f.filename,
        "purpose": f.purpose, "status": f.status, "status_details": details,
    }


def job_object(job: FineTuningJob) -> dict:
    h = job.hyperparameters
    method_hyper = {"n_epochs": h.get("n_epochs"), "batch_size": h.get("batch_size"),
                    "learning_rate_multiplier": h.get("learning_rate_multiplier")}
    if job.method != "full":
        method_hyper |= {"lora_rank": h.get("lora_rank"), "lora_alpha": h.get("lora_alpha")}
    return {
        "object": "fine_tuning.job", "id": job.public_id, "created_at": _ts(job.created_at), "finished_at": _ts(job.finished_at),
        "model": job.base_reference, "fine_tuned_model": job.fine_tuned_model or None, "organization_id": f"user-{job.owner_id}",
        "status": job.status, "hyperparameters": {k: method_hyper[k] for k in ("n_epochs", "batch_size", "learning_rate_multiplier")},
        "training_file": job.training_file.public_id, "validation_file": job.validation_file.public_id if job.validation_file else None,
        "result_files": [], "trained_tokens": job.trained_tokens or None, "seed": job.seed, "user_provided_suffix": job.suffix or None,
        "error": {"code": job.error_code, "message": job.error_message, "param": None} if job.error_code else None,
        "estimated_finish": None, "integrations": [],
        "method": {"type": "supervised" if job.method == "lora" else job.method, "supervised": {"hyperparameters": method_hyper}},
    }


def _page(request, queryset, to_object, *, find=None):
    """OpenAI's cursor pagination: newest first, `after` an id (found by `find`), `limit` up to 100."""
    try:
        limit = max(1, min(100, int(request.query_params.get("limit", 20))))
    except ValueError as exc:
        raise InvalidRequest("limit must be a number.", param="limit") from exc
    after = request.query_params.get("after")
    if after:
        anchor = (find or (lambda ref: queryset.filter(public_id=ref).first()))(after)
        if anchor is None:
            raise NotFound(f"No object {after!r} to page after.", param="after")
        queryset = queryset.filter(pk__lt=anchor.pk)
    items = list(queryset.order_by("-pk")[: limit + 1])
    return Response({"object": "list", "data": [to_object(x) for x in items[:limit]], "has_more": len(items) > limit})


def _by_hex_id(queryset, prefix: str):
    """Events and checkpoints are named `<prefix>-<hex pk>`; find one by that name."""

    def find(ref: str):
        try:
            return queryset.filter(pk=int(ref.removeprefix(f"{prefix}-"), 16)).first()
        except ValueError:
            return None

    return find


def _file(request, file_id) -> TrainingFile:
    return training_file_get(user=request.user, public_id=file_id)


def _job(request, job_id) -> FineTuningJob:
    return finetune_job_get(user=request.user, public_id=job_id)


class FileUploadSerializer(serializers.Serializer):
    file = serializers.FileField()
    purpose = serializers.ChoiceField(choices=["fine-tune"])


class FileListView(OpenAIView):
    parser_classes = [MultiPartParser, FormParser]
    request_serializer = FileUploadSerializer

    def get(self, request):
        return _page(request, TrainingFile.objects.filter(owner=request.user), file_object)

    def post(self, request):
        serializer = FileUploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        f = services.training_file_create(owner=request.user, upload=serializer.validated_data["file"], purpose="fine-tune")
        return Response(file_object(f))


class FileDetailView(OpenAIView):
    def get(self, request, file_id):
        return Response(file_object(_file(request, file_id)))

    def delete(self, request, file_id):
        f = _file(request, file_id)
        services.training_file_delete(training_file=f)
        return Response({"id": file_id, "object": "file", "deleted": True})


class FileContentView(OpenAIView):
    def perform_content_negotiation(self, request, force=False):
        # The raw file goes back whatever the client accepts (the openai client asks for application/binary).
        return super().perform_content_negotiation(request, force=True)

    def get(self, request, file_id):
        f = _file(request, file_id)
        return FileResponse(f.file.open("rb"), content_type="application/octet-stream", as_attachment=True, filename=f.filename)


class JobCreateSerializer(serializers.Serializer):
    model = serializers.CharField(max_length=300)
    training_file = serializers.CharField(max_length=40)
    validation_file = serializers.CharField(max_length=40, required=False, allow_null=True)
    hyperparameters = serializers.DictField(required=False, allow_null=True)
    suffix = serializers.CharField(max_length=40, required=False, allow_blank=True, allow_null=True)
    seed = serializers.IntegerField(required=False, allow_null=True)
    method = serializers.DictField(required=False, allow_null=True)


class JobListView(OpenAIView):
    parser_classes = [JSONParser]
    request_serializer = JobCreateSerializer

    def get(self, request):
        return _page(request, FineTuningJob.objects.filter(owner=request.user).select_related("training_file", "validation_file"), job_object)

    def post(self, request):
        serializer = JobCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        method = data.get("method") or {"type": "supervised"}
        kind = METHOD_TYPES.get(method.get("type"))
        if kind is None:
            raise InvalidRequest("method.type is supervised, lora, full or pretrain.", param="method.type")
        hyper = dict(data.get("hyperparameters") or {})
        hyper |= (method.get(method["type"]) or {}).get("hyperparameters") or {}
        training = _file(request, data["training_file"])
        validation = _file(request, data["validation_file"]) if data.get("validation_file") else None
        job = services.finetune_job_create(
            owner=request.user, training_file=training, validation_file=validation, model=data["model"], method=kind,
            hyperparameters=hyper, suffix=data.get("suffix") or "", seed=data.get("seed"),
        )
        return Response(job_object(job))


class JobDetailView(OpenAIView):
    def get(self, request, job_id):
        return Response(job_object(_job(request, job_id)))


class JobCancelView(OpenAIView):
    def post(self, request, job_id):
        job = services.finetune_job_cancel(job=_job(request, job_id))
        return Response(job_object(FineTuningJob.objects.get(pk=job.pk)))


def event_object(e: JobEvent) -> dict:
    return {"object": "fine_tuning.job.event", "id": f"ftevent-{e.pk:x}", "created_at": _ts(e.created_at), "level": e.level,
            "message": e.message, "data": e.data, "type": "message"}


class JobEventsView(OpenAIView):
    def get(self, request, job_id):
        events = JobEvent.objects.filter(job=_job(request, job_id))
        return _page(request, events, event_object, find=_by_hex_id(events, "ftevent"))


class JobCheckpointsView(OpenAIView):
    def get(self, request, job_id):
        job = _job(request, job_id)
        events = JobEvent.objects.filter(job=job, message__startswith="Checkpoint saved")

        def checkpoint(e):
            step = e.data.get("step")
            metric = JobMetric.objects.filter(job=job, step=step, train_loss__isnull=False).last()
            return {"object": "fine_tuning.job.checkpoint", "id": f"ftckpt-{e.pk:x}", "created_at": _ts(e.created_at),
                    "fine_tuned_model_checkpoint": f"{job.public_id}:ckpt-step-{step}", "step_number": step,
                    "metrics": {"step": step, "train_loss": metric.train_loss if metric else None}, "fine_tuning_job_id": job.public_id}

        return _page(request, events, checkpoint, find=_by_hex_id(events, "ftckpt"))

"""OpenAI's Files and Fine-tuning APIs over the customization services (same code path as the pages)."""

from __future__ import annotations

from django.http import FileResponse
from rest_framework import serializers
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response

from apps.api.openai_views import OpenAIView
from apps.core.errors import InvalidRequest, NotFound
from apps.tuning import services
from apps.tuning.hyperparameters import HYPERPARAMETERS
from apps.tuning.models import FineTuningJob, JobCheckpoint, JobEvent, TrainingFile
from apps.tuning.selectors import (
    access_job,
    access_training_file,
    finetune_job_estimated_finish,
    finetune_job_list,
    job_checkpoint_list,
    job_metadata_query,
    training_file_list,
)

# `scratch` pre-trains a new model: method {"type": "scratch", "scratch": {"hyperparameters": {"preset": "tiny",
# "tokenizer": "base"}}}, `model` naming the model whose tokenizer it borrows.
# `classification` trains a classifier head: {"type": "classification", "classification": {"hyperparameters":
# {"n_epochs": 3, "classifier_body": "lora" | "full"}}}, on a JSONL file of {"text", "label"}.
METHOD_TYPES = {"supervised": "lora", "lora": "lora", "full": "full", "pretrain": "pretrain", "scratch": "scratch",
                "classification": "classification"}
# Methods of the store's own whose settings come back in a block of their own name (OpenAI's shape for its types).
OWN_METHOD_BLOCKS = ("classification", "scratch")
# The request field a job's error names (OpenAI's `error.param`).
ERROR_PARAMS = {"invalid_training_file": "training_file", "invalid_validation_file": "validation_file"}


def _ts(dt) -> int | None:
    return int(dt.timestamp()) if dt else None


def file_object(f: TrainingFile) -> dict:
    details = f.problems_text() or None
    return {
        "id": f.public_id, "object": "file", "bytes": f.bytes, "created_at": _ts(f.created_at), "filename": f.filename,
        "purpose": f.purpose, "status": f.status, "status_details": details,
    }


def job_object(job: FineTuningJob) -> dict:
    # OpenAI's three at the top level; the method's object adds the LoRA settings where the job trains an adapter.
    applying = [h for h in HYPERPARAMETERS if h.applies(job.method)]
    openai_hyper = {h.name: job.hyperparameters.get(h.name) for h in applying if not h.adapter_only and h.methods is None}
    full_weights = job.method == FineTuningJob.Method.FULL or job.hyperparameters.get("classifier_body") == "full"
    method_hyper = {h.name: job.hyperparameters.get(h.name) for h in applying if not h.adapter_only or not full_weights}
    block = job.method if job.method in OWN_METHOD_BLOCKS else "supervised"
    return {
        "object": "fine_tuning.job", "id": job.public_id, "created_at": _ts(job.created_at), "finished_at": _ts(job.finished_at),
        "model": job.base_reference, "fine_tuned_model": job.fine_tuned_model or None, "organization_id": f"user-{job.owner_id}",
        "status": job.status, "hyperparameters": openai_hyper,
        "training_file": job.training_file.public_id, "validation_file": job.validation_file.public_id if job.validation_file else None,
        "result_files": [], "trained_tokens": job.trained_tokens or None, "seed": job.seed, "user_provided_suffix": job.suffix or None,
        "error": {"code": job.error_code, "message": job.error_message, "param": ERROR_PARAMS.get(job.error_code)}
        if job.error_code else None,
        "estimated_finish": finetune_job_estimated_finish(job=job), "integrations": [], "metadata": job.metadata or None,
        "method": {"type": "supervised" if job.method == "lora" else job.method, block: {"hyperparameters": method_hyper}},
    }


def _page(request, queryset, to_object, *, find=None, default_limit: int = 20, ascending: bool = False):
    """OpenAI's cursor pagination: newest first (oldest with `ascending`), `after` an id (found by `find`), `limit`
    up to 100."""
    try:
        limit = max(1, min(100, int(request.query_params.get("limit", default_limit))))
    except ValueError as exc:
        raise InvalidRequest("limit must be a number.", param="limit") from exc
    after = request.query_params.get("after")
    if after:
        anchor = (find or (lambda ref: queryset.filter(public_id=ref).first()))(after)
        if anchor is None:
            raise NotFound(f"No object {after!r} to page after.", param="after")
        queryset = queryset.filter(pk__gt=anchor.pk) if ascending else queryset.filter(pk__lt=anchor.pk)
    items = list(queryset.order_by("pk" if ascending else "-pk")[: limit + 1])
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
    return access_training_file(user=request.user, public_id=file_id)


def _job(request, job_id) -> FineTuningJob:
    return access_job(user=request.user, public_id=job_id)


class FileUploadSerializer(serializers.Serializer):
    file = serializers.FileField()
    purpose = serializers.ChoiceField(choices=["fine-tune"])


class FileListView(OpenAIView):
    parser_classes = [MultiPartParser, FormParser]
    request_serializer = FileUploadSerializer

    def get(self, request):
        """OpenAI's `order` (`desc` by default) and `purpose` (every file here is `fine-tune`)."""
        order = request.query_params.get("order", "desc")
        if order not in ("asc", "desc"):
            raise InvalidRequest("order is asc or desc.", param="order")
        files = training_file_list(user=request.user)
        if request.query_params.get("purpose") not in (None, "fine-tune"):
            files = files.none()
        return _page(request, files, file_object, ascending=order == "asc")

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
    metadata = serializers.DictField(required=False, allow_null=True)
    # Beside OpenAI's fields (the `openai` client sends it with `extra_body`): the result becomes the next version of
    # this model of the caller's, instead of a model of its own.
    register_as = serializers.CharField(max_length=255, required=False, allow_null=True, allow_blank=True)


class JobListView(OpenAIView):
    parser_classes = [JSONParser]
    request_serializer = JobCreateSerializer

    def get(self, request):
        """OpenAI's filter: `metadata[k]=v` (every pair must match), or `metadata=null` for jobs without metadata."""
        return _page(request, finetune_job_list(user=request.user, **job_metadata_query(request.query_params)), job_object)

    def post(self, request):
        serializer = JobCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        method = data.get("method") or {"type": "supervised"}
        kind = METHOD_TYPES.get(method.get("type"))
        if kind is None:
            raise InvalidRequest(f"method.type is one of {', '.join(METHOD_TYPES)}.", param="method.type")
        hyper = dict(data.get("hyperparameters") or {})
        hyper |= (method.get(method["type"]) or {}).get("hyperparameters") or {}
        training = _file(request, data["training_file"])
        validation = _file(request, data["validation_file"]) if data.get("validation_file") else None
        job = services.finetune_job_create(
            owner=request.user, training_file=training, validation_file=validation, model=data["model"], method=kind,
            hyperparameters=hyper, suffix=data.get("suffix") or "", seed=data.get("seed"), metadata=data.get("metadata"),
            register_as=data.get("register_as") or None,
        )
        return Response(job_object(job))


class JobDetailView(OpenAIView):
    def get(self, request, job_id):
        return Response(job_object(_job(request, job_id)))


class JobCancelView(OpenAIView):
    def post(self, request, job_id):
        return Response(job_object(services.finetune_job_cancel(job=_job(request, job_id))))


def event_object(e: JobEvent) -> dict:
    return {"object": "fine_tuning.job.event", "id": f"ftevent-{e.pk:x}", "created_at": _ts(e.created_at), "level": e.level,
            "message": e.message, "data": e.data, "type": "message"}


class JobEventsView(OpenAIView):
    def get(self, request, job_id):
        events = JobEvent.objects.filter(job=_job(request, job_id))
        return _page(request, events, event_object, find=_by_hex_id(events, "ftevent"))


def checkpoint_object(c: JobCheckpoint) -> dict:
    # `fine_tuned_model_checkpoint` is the checkpoint's model id (`ft:...:ckpt-step-<N>`): /v1/chat/completions takes it.
    return {"object": "fine_tuning.job.checkpoint", "id": f"ftckpt-{c.pk:x}", "created_at": _ts(c.created_at),
            "fine_tuned_model_checkpoint": c.model_version.registered_model.name, "step_number": c.step,
            "metrics": {"step": c.step, **c.metrics}, "fine_tuning_job_id": c.job.public_id}


class JobCheckpointsView(OpenAIView):
    def get(self, request, job_id):
        """The job's kept checkpoints (the models of its last three epochs), once registered: OpenAI's list, newest
        first, 10 a page by default, with `first_id` and `last_id`."""
        checkpoints = job_checkpoint_list(job=_job(request, job_id))
        page = _page(request, checkpoints, checkpoint_object, find=_by_hex_id(checkpoints, "ftckpt"), default_limit=10)
        data = page.data["data"]
        page.data.update(first_id=data[0]["id"] if data else None, last_id=data[-1]["id"] if data else None)
        return page

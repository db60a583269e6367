from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.core.errors import StoreError
from apps.registry.models import ModelVersion
from apps.registry.selectors import registered_model_list
from apps.tuning import services
from apps.tuning.forms import JobForm, UploadForm
from apps.tuning.models import FineTuningJob, TrainingFile


def _model_choices(user) -> list[tuple[str, str]]:
    """The base model and the user's own full-weight fine-tunes: what a job can start from."""
    choices = []
    for model in registered_model_list(user=user):
        if model.owner_id not in (None, user.pk):
            continue
        if model.versions.filter(status=ModelVersion.Status.READY, kind=ModelVersion.Kind.FULL).exists():
            choices.append((model.name, model.name))
    return choices


def _job_or_404(user, public_id) -> FineTuningJob:
    job = FineTuningJob.objects.filter(owner=user, public_id=public_id).select_related("training_file", "validation_file", "result_version").first()
    if job is None:
        raise Http404("No such job.")
    return job


@login_required
@require_http_methods(["GET", "POST"])
def customize(request):
    upload = UploadForm()
    if request.method == "POST":
        upload = UploadForm(request.POST, request.FILES)
        if upload.is_valid():
            try:
                f = services.training_file_create(owner=request.user, upload=upload.cleaned_data["file"])
            except StoreError as exc:
                upload.add_error("file", exc.message)
            else:
                messages.success(request, _("Uploaded. The file is being checked; this page shows the report."))
                return redirect("tuning:file", public_id=f.public_id)
    jobs = FineTuningJob.objects.filter(owner=request.user).select_related("training_file")[:50]
    FineTuningJob.objects.filter(owner=request.user, owner_notified=False, status__in=FineTuningJob.FINISHED).update(owner_notified=True)
    return render(request, "tuning/customize.html", {
        "upload_form": upload,
        "job_form": JobForm(user=request.user, model_choices=_model_choices(request.user)),
        "files": TrainingFile.objects.filter(owner=request.user)[:50],
        "jobs": jobs,
    })


@login_required
@require_GET
def file_detail(request, public_id):
    f = TrainingFile.objects.filter(owner=request.user, public_id=public_id).first()
    if f is None:
        raise Http404("No such file.")
    return render(request, "tuning/file.html", {"file": f})


@login_required
@require_GET
def estimate(request):
    """The job form's live estimate: steps, tokens and time on this hardware, before anything is queued."""
    f = TrainingFile.objects.filter(owner=request.user, public_id=request.GET.get("training_file"), status="processed").first()
    if f is None:
        return JsonResponse({"error": {"message": _("Choose a processed training file.")}}, status=400)
    method = request.GET.get("method", "lora")
    given = {k: request.GET[k] for k in ("n_epochs", "batch_size", "learning_rate_multiplier", "lora_rank") if request.GET.get(k)}
    try:
        hyper = services.hyperparameters_resolve(method=method, examples=f.example_count, given=given)
        return JsonResponse({"hyperparameters": hyper, **services.job_estimate(method=method, hyper=hyper, training_file=f)})
    except StoreError as exc:
        return JsonResponse({"error": {"message": exc.message, "param": exc.param}}, status=exc.status)


@login_required
@require_POST
def job_create(request):
    form = JobForm(request.POST, user=request.user, model_choices=_model_choices(request.user))
    if not form.is_valid():
        messages.error(request, _("Check the job settings: ") + "; ".join(f"{k}: {v[0]}" for k, v in form.errors.items()))
        return redirect("tuning:customize")
    d = form.cleaned_data
    files = {f.public_id: f for f in TrainingFile.objects.filter(owner=request.user, public_id__in=[d["training_file"], d.get("validation_file") or ""])}
    try:
        job = services.finetune_job_create(
            owner=request.user, training_file=files[d["training_file"]], validation_file=files.get(d.get("validation_file") or ""),
            model=d["model"], method=d["method"], hyperparameters=form.hyperparameters(), suffix=d.get("suffix") or "", seed=d.get("seed"),
        )
    except StoreError as exc:
        messages.error(request, exc.message)
        return redirect("tuning:customize")
    return redirect("tuning:job", public_id=job.public_id)


@login_required
@require_GET
def job_detail(request, public_id):
    job = _job_or_404(request.user, public_id)
    if job.is_finished and not job.owner_notified:
        FineTuningJob.objects.filter(pk=job.pk).update(owner_notified=True)
    return render(request, "tuning/job.html", {"job": job})


def job_state(job: FineTuningJob, *, after_metric: int = 0, after_event: int = 0) -> dict:
    """What the job page polls: status, progress, ETA, and the metrics and events it has not seen yet."""
    eta = None
    if job.status == FineTuningJob.Status.RUNNING:
        recent = list(job.metrics.filter(train_loss__isnull=False).order_by("-id")[:10])
        if len(recent) >= 2 and recent[0].step > recent[-1].step:
            per_step = (recent[0].created_at - recent[-1].created_at).total_seconds() / (recent[0].step - recent[-1].step)
            eta = round(per_step * (job.total_steps - job.step))
    queue_position = None
    if job.status in (FineTuningJob.Status.QUEUED, FineTuningJob.Status.VALIDATING_FILES):
        queue_position = FineTuningJob.objects.filter(status__in=["validating_files", "queued"], created_at__lt=job.created_at).count() + 1
    return {
        "id": job.public_id, "status": job.status, "status_label": job.get_status_display(), "step": job.step,
        "total_steps": job.total_steps, "progress": job.progress, "eta_seconds": eta, "queue_position": queue_position,
        "fine_tuned_model": job.fine_tuned_model or None, "error": job.error_message or None,
        "val_loss_before": job.val_loss_before, "val_loss_after": job.val_loss_after,
        "metrics": [
            {"id": m.pk, "step": m.step, "train_loss": m.train_loss, "val_loss": m.val_loss, "tokens_per_second": m.tokens_per_second}
            for m in job.metrics.filter(pk__gt=after_metric)
        ],
        "events": [{"id": e.pk, "level": e.level, "message": e.message, "at": e.created_at.isoformat()} for e in job.events.filter(pk__gt=after_event)],
    }


@login_required
@require_GET
def job_status(request, public_id):
    job = _job_or_404(request.user, public_id)
    try:
        after_metric, after_event = int(request.GET.get("after_metric", 0)), int(request.GET.get("after_event", 0))
    except ValueError:
        after_metric = after_event = 0
    return JsonResponse(job_state(job, after_metric=after_metric, after_event=after_event))


@login_required
@require_POST
def job_cancel(request, public_id):
    job = _job_or_404(request.user, public_id)
    try:
        services.finetune_job_cancel(job=job)
        messages.info(request, _("Cancelling: training stops after the current step."))
    except StoreError as exc:
        messages.error(request, exc.message)
    return redirect("tuning:job", public_id=job.public_id)

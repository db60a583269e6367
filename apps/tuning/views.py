"""The /customize/ pages: upload and check training data, estimate and start a job, watch it learn."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.core.errors import InvalidRequest, NotFound, StoreError
from apps.core.page_json import error_response
from apps.registry.models import ModelVersion
from apps.registry.selectors import registered_model_list
from apps.tuning import selectors, services
from apps.tuning.forms import JobForm, UploadForm
from apps.tuning.hyperparameters import NAMES
from apps.tuning.models import TrainingFile
from apps.tuning.services.limits import duration_text
from apps.tuning.services.versions import CHECKPOINT_MARK


def _model_choices(user) -> list[tuple[str, str]]:
    """The store's full-weight models and the user's own fine-tunes (full or LoRA: a LoRA parent is trained on its
    merged weights): what a job can start from."""
    choices = []
    for model in registered_model_list(user=user):
        if model.owner_id not in (None, user.pk):
            continue
        ready = model.versions.filter(status=ModelVersion.Status.READY).exclude(task=ModelVersion.Task.CLASSIFIER)
        if model.owner_id is None:
            ready = ready.filter(kind=ModelVersion.Kind.FULL)
        if ready.exists():
            choices.append((model.name, model.name))
    return choices


def _register_choices(user) -> list[tuple[str, str]]:
    """Where a job's result goes: a model of its own, or the next version of one of the user's models."""
    own = [m.name for m in registered_model_list(user=user) if m.owner_id == user.pk and CHECKPOINT_MARK not in m.name]
    return [("", _("a new model of its own"))] + [(name, _("the next version of %(model)s") % {"model": name}) for name in own]


def _page_object(access, request, public_id):
    """What an access helper gives the user; its NotFound (another user's object, or none) is the 404 page."""
    try:
        return access(user=request.user, public_id=public_id)
    except NotFound as exc:
        raise Http404(exc.message) from exc


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
    jobs = selectors.finetune_job_list(user=request.user)[:50]
    services.finetune_job_notices_clear(owner=request.user)
    limits = services.training_limits(user=request.user)
    return render(request, "tuning/customize.html", {
        "upload_form": upload,
        "job_form": JobForm(user=request.user, model_choices=_model_choices(request.user),
                            register_choices=_register_choices(request.user),
                            # ?training_file=: a file chosen elsewhere (its page, the feedback export)
                            initial={"training_file": request.GET.get("training_file", "")}),
        "files": selectors.training_file_list(user=request.user)[:50],
        "jobs": jobs,
        "limits": limits,
        "wall": duration_text(limits["max_wall_seconds"]),
    })


@login_required
@require_GET
def file_detail(request, public_id):
    return render(request, "tuning/file.html", {"file": _page_object(selectors.access_training_file, request, public_id)})


@login_required
@require_GET
def estimate(request):
    """The job form's live estimate before anything is queued: steps, tokens and time on this hardware, the limits
    the job is held to and what is left of the user's training budget today, and the problem if it is over one."""
    public_id = request.GET.get("training_file", "")
    try:
        f = selectors.access_training_file(user=request.user, public_id=public_id) if public_id else None
        if f is not None and f.status == TrainingFile.Status.UPLOADED:
            raise InvalidRequest(_("The file is still being checked: the estimate appears once it is processed. You can "
                                   "start the job now; it waits for the checks."), param="training_file")
        if f is None or f.status != TrainingFile.Status.PROCESSED:
            raise InvalidRequest(_("Choose a processed training file."), param="training_file")
        given = {k: request.GET[k] for k in NAMES if request.GET.get(k)}
        validation = request.GET.get("validation_file")
        validation = selectors.access_training_file(user=request.user, public_id=validation) if validation else None
        return JsonResponse(services.finetune_job_estimate(owner=request.user, training_file=f, method=request.GET.get("method", "lora"),
                                                           hyperparameters=given, validation_file=validation))
    except StoreError as exc:
        return error_response(exc)


@login_required
@require_POST
def job_create(request):
    form = JobForm(request.POST, user=request.user, model_choices=_model_choices(request.user),
                   register_choices=_register_choices(request.user))
    if not form.is_valid():
        messages.error(request, _("Check the job settings: ") + "; ".join(f"{k}: {v[0]}" for k, v in form.errors.items()))
        return redirect("tuning:customize")
    d = form.cleaned_data
    try:
        training = selectors.access_training_file(user=request.user, public_id=d["training_file"])
        validation = selectors.access_training_file(user=request.user, public_id=d["validation_file"]) if d.get("validation_file") else None
        job = services.finetune_job_create(
            owner=request.user, training_file=training, validation_file=validation, model=d["model"], method=d["method"],
            hyperparameters=form.hyperparameters(), suffix=d.get("suffix") or "", seed=d.get("seed"),
            register_as=d.get("register_as") or None,
        )
    except StoreError as exc:
        messages.error(request, exc.message)
        return redirect("tuning:customize")
    return redirect("tuning:job", public_id=job.public_id)


@login_required
@require_GET
def job_detail(request, public_id):
    job = _page_object(selectors.access_job, request, public_id)
    services.finetune_job_notices_clear(owner=request.user, job=job)
    checkpoints = job.checkpoints.select_related("model_version__registered_model").order_by("step")
    if job.is_finished:  # a failed or cancelled job's epochs were kept for nothing: only registered ones are shown
        checkpoints = checkpoints.filter(model_version__isnull=False)
    return render(request, "tuning/job.html", {"job": job, "checkpoints": checkpoints,
                                               "evaluation": selectors.evaluation_summary(evaluation=job.evaluation)})


@login_required
@require_GET
def job_status(request, public_id):
    job = _page_object(selectors.access_job, request, public_id)
    try:
        after_metric, after_event = int(request.GET.get("after_metric", 0)), int(request.GET.get("after_event", 0))
    except ValueError:
        after_metric = after_event = 0
    return JsonResponse(selectors.finetune_job_state(job=job, after_metric=after_metric, after_event=after_event))


@login_required
@require_POST
def job_cancel(request, public_id):
    job = _page_object(selectors.access_job, request, public_id)
    try:
        services.finetune_job_cancel(job=job)
        messages.info(request, _("Cancelling: training stops after the current step."))
    except StoreError as exc:
        messages.error(request, exc.message)
    return redirect("tuning:job", public_id=job.public_id)

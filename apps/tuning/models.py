"""Training files and fine-tuning jobs. The job row is the truth of a job: state, progress, lease, heartbeat."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from apps.core.models import TimeStampedModel


def _public_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def new_file_id() -> str:
    return _public_id("file")


def new_job_id() -> str:
    return _public_id("ftjob")


def training_file_path(instance, filename) -> str:
    return f"training_files/{instance.owner_id}/{instance.public_id}"


class TrainingFile(TimeStampedModel):
    class Status(models.TextChoices):
        UPLOADED = "uploaded", _("Uploaded")
        PROCESSED = "processed", _("Processed")
        ERROR = "error", _("Error")

    class Format(models.TextChoices):
        CHAT = "chat", _("Chat (messages)")
        PROMPT_COMPLETION = "prompt_completion", _("Prompt and completion")
        CLASSIFICATION = "classification", _("Labelled texts (classification)")
        TEXT = "text", _("Plain text")

    public_id = models.CharField(max_length=40, unique=True, default=new_file_id)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="training_files")
    filename = models.CharField(max_length=255)
    purpose = models.CharField(max_length=32, default="fine-tune")
    file = models.FileField(upload_to=training_file_path)
    bytes = models.PositiveBigIntegerField(default=0)
    format = models.CharField(max_length=24, choices=Format.choices, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.UPLOADED)
    problems = models.JSONField(default=list, blank=True)  # [{"line": n | null, "message": "..."}]
    example_count = models.PositiveIntegerField(default=0)
    token_count = models.PositiveBigIntegerField(default=0)
    preview = models.JSONField(default=list, blank=True)
    # A classification file's labels with their example counts, in the order they first appear: {"bug": 12, ...}.
    label_counts = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.public_id} ({self.filename})"

    def problems_text(self, limit: int | None = None) -> str:
        """The problems, each with its line number: `line 3: not valid JSON (...); line 7: ...`."""
        shown = self.problems[:limit] if limit else self.problems
        text = "; ".join(f"line {p['line']}: {p['message']}" if p.get("line") else p["message"] for p in shown)
        hidden = len(self.problems) - len(shown)
        return f"{text}; and {hidden} more" if hidden else text


class FineTuningJob(TimeStampedModel):
    class Status(models.TextChoices):  # OpenAI's states
        VALIDATING_FILES = "validating_files", _("Validating files")
        QUEUED = "queued", _("Queued")
        RUNNING = "running", _("Running")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")
        CANCELLED = "cancelled", _("Cancelled")

    class Method(models.TextChoices):
        LORA = "lora", _("LoRA adapter")
        FULL = "full", _("Full fine-tuning")
        PRETRAIN = "pretrain", _("Continued pre-training on text")
        CLASSIFICATION = "classification", _("Classification head")
        SCRATCH = "scratch", _("Pre-training from scratch")

    ACTIVE = (Status.VALIDATING_FILES, Status.QUEUED, Status.RUNNING)
    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    public_id = models.CharField(max_length=40, unique=True, default=new_job_id)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="finetuning_jobs")
    # Null once the base model is deleted (allowed when the job has ended: `base_reference` keeps its name).
    base_version = models.ForeignKey(
        "registry.ModelVersion", null=True, on_delete=models.SET_NULL, related_name="finetuning_jobs"
    )
    base_reference = models.CharField(max_length=300)  # as the user gave it
    training_file = models.ForeignKey(TrainingFile, on_delete=models.PROTECT, related_name="jobs")
    validation_file = models.ForeignKey(TrainingFile, null=True, blank=True, on_delete=models.PROTECT, related_name="validation_jobs")
    method = models.CharField(max_length=16, choices=Method.choices, default=Method.LORA)
    hyperparameters = models.JSONField(default=dict)  # resolved values: n_epochs, batch_size, learning_rate, ...
    suffix = models.CharField(max_length=40, blank=True)
    seed = models.IntegerField(default=42)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.VALIDATING_FILES, db_index=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    estimate = models.JSONField(default=dict, blank=True)  # steps, tokens, seconds on this hardware
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    trained_tokens = models.PositiveBigIntegerField(default=0)
    last_checkpoint_step = models.PositiveIntegerField(default=0)
    val_loss_before = models.FloatField(null=True, blank=True)
    val_loss_after = models.FloatField(null=True, blank=True)
    # The evaluation gate's figures (services/evaluation.py): base against tuned on the held-out data (losses, exact
    # match, answer pairs) and, for the next version of a model, the gate's decision with its reason.
    evaluation = models.JSONField(default=dict, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    cancel_requested = models.BooleanField(default=False)
    # Seconds the trainer has run, over every attempt: the job stops at FINETUNE_MAX_WALL_SECONDS.
    training_seconds = models.FloatField(default=0)
    # When the job's run message was last sent to the gpu queue, and how many of its messages no runner took (lost
    # with a worker that had fetched them): beat sends it again, and fails the job after FINETUNE_MAX_ATTEMPTS.
    dispatched_at = models.DateTimeField(null=True, blank=True)
    lost_messages = models.PositiveSmallIntegerField(default=0)
    # Exactly one runner at a time: a lease (owner token + expiry), renewed by the heartbeat.
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    fine_tuned_model = models.CharField(max_length=300, blank=True)
    owner_notified = models.BooleanField(default=False, help_text=_("The owner saw the end of the job in the site."))
    result_version = models.OneToOneField(
        "registry.ModelVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="source_job"
    )
    metadata = models.JSONField(default=dict, blank=True)  # OpenAI's metadata: up to 16 string pairs
    # The result becomes the next version of this model (the caller's own) instead of a model of its own.
    register_as = models.ForeignKey(
        "registry.RegisteredModel", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.public_id

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def progress(self) -> float:
        return self.step / self.total_steps if self.total_steps else 0.0


class JobEvent(models.Model):
    class Level(models.TextChoices):
        INFO = "info"
        WARN = "warn"
        ERROR = "error"

    job = models.ForeignKey(FineTuningJob, on_delete=models.CASCADE, related_name="events")
    level = models.CharField(max_length=8, choices=Level.choices, default=Level.INFO)
    message = models.TextField()
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"[{self.level}] {self.message}"


class JobMetric(models.Model):
    job = models.ForeignKey(FineTuningJob, on_delete=models.CASCADE, related_name="metrics")
    step = models.PositiveIntegerField()
    train_loss = models.FloatField(null=True, blank=True)
    val_loss = models.FloatField(null=True, blank=True)
    learning_rate = models.FloatField(null=True, blank=True)
    tokens_per_second = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["step", "id"]

    def __str__(self) -> str:
        return f"{self.job_id} step {self.step}"


class JobCheckpoint(models.Model):
    """A kept checkpoint (OpenAI's): the model at the end of one of the job's last three epochs. Written by the
    trainer's reporter as the epoch ends; registered as a model of its own (`<job's model id>:ckpt-step-<N>`) when
    the job succeeds, and listed by /v1 from then on. (The resume checkpoints, every FINETUNE_CHECKPOINT_STEPS, are
    the trainer's own: the job's `last_checkpoint_step` and its events say where it would resume.)"""

    job = models.ForeignKey(FineTuningJob, on_delete=models.CASCADE, related_name="checkpoints")
    step = models.PositiveIntegerField()
    epoch = models.PositiveIntegerField(default=0)
    # OpenAI's names at that step: train_loss, train_mean_token_accuracy, valid_loss, full_valid_loss, ...
    metrics = models.JSONField(default=dict, blank=True)
    # The checkpoint's model, once registered; deleting that model removes the row.
    model_version = models.OneToOneField(
        "registry.ModelVersion", null=True, blank=True, on_delete=models.CASCADE, related_name="job_checkpoint"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["step", "id"]
        constraints = [models.UniqueConstraint(fields=["job", "step"], name="tuning_checkpoint_one_per_step")]

    def __str__(self) -> str:
        return f"{self.job_id} checkpoint at step {self.step}"

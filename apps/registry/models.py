"""Registered model → immutable versions → movable aliases, every alias move recorded (MLflow / HF Hub)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from apps.core.models import TimeStampedModel


class RegisteredModel(TimeStampedModel):
    class Visibility(models.TextChoices):
        PUBLIC = "public", _("Public")
        PRIVATE = "private", _("Private (owner only)")

    # The model id clients use: `smollm2-135m-instruct`, `ft:<root-base>:<owner>:<suffix>:<job-id>`.
    name = models.CharField(max_length=255, unique=True)
    # A filesystem-safe form of the name: models_registry/<folder>/<version>/.
    folder = models.CharField(max_length=255, unique=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="registered_models",
        help_text=_("Empty for the store's own (system) models."),
    )
    visibility = models.CharField(max_length=16, choices=Visibility.choices, default=Visibility.PRIVATE)
    description = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("registry:model-detail", args=[self.name])

    @property
    def is_system(self) -> bool:
        return self.owner_id is None


class ModelVersion(TimeStampedModel):
    class Status(models.TextChoices):
        # A row is created `ready` in the same transaction that moves its folder into place, so other
        # processes never see a version whose files are still being written. `failed` marks one whose
        # files later failed verification.
        READY = "ready", _("Ready")
        FAILED = "failed", _("Failed verification")

    class Kind(models.TextChoices):
        FULL = "full", _("Full weights")
        LORA = "lora", _("LoRA adapter")

    class Task(models.TextChoices):
        # What the model does, which decides the endpoints and app kinds that can use it: a chat model has a chat
        # template (chat and completions, every app kind but classifier); a plain language model has none
        # (completions and generator apps); a classifier has a classification head (classifier apps and
        # /api/v1 classification runs only).
        CHAT = "chat", _("Chat model")
        TEXT = "text", _("Language model (plain text)")
        CLASSIFIER = "classifier", _("Classifier")

    registered_model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.READY)
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.FULL)
    task = models.CharField(max_length=12, choices=Task.choices, default=Task.CHAT)
    base_version = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.RESTRICT, related_name="derived_versions"
    )
    artifact_path = models.CharField(max_length=512, help_text=_("Relative to MODELS_REGISTRY_ROOT."))
    size_bytes = models.BigIntegerField(default=0)
    checksums = models.JSONField(default=dict, help_text=_("sha256 of every file, by relative path."))
    metrics = models.JSONField(default=dict, blank=True)
    source = models.JSONField(default=dict, blank=True, help_text=_("Where the weights came from (lineage)."))
    created_by_job = models.CharField(max_length=64, blank=True, help_text=_("Public id of the job that made it."))
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["registered_model", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["registered_model", "number"], name="unique_version_number"),
        ]

    def __str__(self) -> str:
        return f"{self.registered_model.name}@v{self.number}"

    def get_absolute_url(self) -> str:
        return reverse("registry:version-detail", args=[self.registered_model.name, self.number])

    @property
    def reference(self) -> str:
        return f"{self.registered_model.name}@v{self.number}"

    @property
    def path(self) -> Path:
        return Path(settings.MODELS_REGISTRY_ROOT) / self.artifact_path


class ModelAlias(TimeStampedModel):
    registered_model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="aliases")
    name = models.SlugField(max_length=64)
    version = models.ForeignKey(ModelVersion, on_delete=models.RESTRICT, related_name="aliases")

    class Meta:
        ordering = ["registered_model", "name"]
        constraints = [models.UniqueConstraint(fields=["registered_model", "name"], name="unique_alias_name")]
        verbose_name_plural = "model aliases"

    def __str__(self) -> str:
        return f"{self.registered_model.name}@{self.name} → v{self.version.number}"


class ModelAliasMove(models.Model):
    """History: every time an alias is created or moved, one row (who, when, from which version to which)."""

    registered_model = models.ForeignKey(RegisteredModel, on_delete=models.CASCADE, related_name="alias_moves")
    alias = models.SlugField(max_length=64)
    from_version = models.ForeignKey(ModelVersion, null=True, on_delete=models.CASCADE, related_name="+")
    to_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="+")
    moved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    moved_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-moved_at", "-id"]

    def __str__(self) -> str:
        start = f"v{self.from_version.number}" if self.from_version else "∅"
        return f"{self.registered_model.name}@{self.alias}: {start} → v{self.to_version.number}"


class MergedWeights(TimeStampedModel):
    """The full weights of an adapter version (the adapter merged into its base), built once by a task and kept
    beside the version, in `<model folder>/merged/<number>/`, with checksums of their own: the version's folder
    never changes. The row is the truth of the build (who asked when, who builds it, its outcome)."""

    class Status(models.TextChoices):
        BUILDING = "building", _("Being prepared")
        READY = "ready", _("Ready")
        FAILED = "failed", _("Failed")

    version = models.OneToOneField(ModelVersion, on_delete=models.CASCADE, related_name="merged_weights")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.BUILDING)
    # When the build was last asked for (and enqueued): also the token of the conditional UPDATE that asks again.
    requested_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True, help_text=_("When a worker took the build."))
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, help_text=_("Why the last build failed (for staff; not shown to users)."))
    size_bytes = models.BigIntegerField(default=0)
    checksums = models.JSONField(default=dict, blank=True, help_text=_("sha256 of every file, by relative path."))

    class Meta:
        verbose_name_plural = "merged weights"

    def __str__(self) -> str:
        return f"{self.version} merged ({self.status})"

    @property
    def path(self) -> Path:
        model = self.version.registered_model
        return Path(settings.MODELS_REGISTRY_ROOT) / model.folder / "merged" / str(self.version.number)

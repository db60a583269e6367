"""Store apps: what a user builds and publishes, with its settings history, reviews and reports."""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from apps.core.models import TimeStampedModel

USER_MODEL = settings.AUTH_USER_MODEL


def default_model_reference() -> str:
    """The base model at its `latest` alias: what a new app runs on unless its creator picks another."""
    return f"{settings.BASE_MODEL_ID}@latest"


class Category(models.Model):
    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=80)
    description = models.CharField(max_length=200, blank=True)
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["position", "name"]
        verbose_name_plural = "categories"

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("catalog:category", args=[self.slug])


class StoreApp(TimeStampedModel):
    class Kind(models.TextChoices):
        CHATBOT = "chatbot", _("Chatbot")
        GENERATOR = "generator", _("Text generator")
        TRANSLATOR = "translator", _("Translator")

    class Visibility(models.TextChoices):
        PRIVATE = "private", _("Only me")
        LINK = "link", _("Anyone with the link")
        PUBLIC = "public", _("Public (listed in the store)")

    slug = models.SlugField(max_length=80, unique=True)
    name = models.CharField(_("name"), max_length=80)
    short_description = models.CharField(_("short description"), max_length=160)
    description = models.TextField(_("description"), blank=True, max_length=4000)
    category = models.ForeignKey(Category, null=True, blank=True, on_delete=models.SET_NULL, related_name="apps")
    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices, default=Kind.CHATBOT)
    creator = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="store_apps",
        help_text=_("Empty for the store's built-in apps."),
    )
    visibility = models.CharField(_("visibility"), max_length=16, choices=Visibility.choices, default=Visibility.PRIVATE)
    # Never sent to the browser: the system prompt stays on the server.
    instructions = models.TextField(_("instructions"), blank=True, max_length=8000)
    prompt_template = models.TextField(
        _("prompt template"), blank=True, max_length=4000,
        help_text=_("Generator apps: the request sent to the model, with {field} placeholders for the form's fields."),
    )
    # Strings an answer must never contain (a code, a name in the instructions): the run's output filter stops an
    # answer that would give one away. Never sent to the browser either, but to the app's creator.
    secret_strings = models.JSONField(default=list, blank=True)
    input_fields = models.JSONField(default=list, blank=True)
    conversation_starters = models.JSONField(default=list, blank=True)
    model_reference = models.CharField(_("model"), max_length=300, default=default_model_reference)
    temperature = models.FloatField(default=0.7, validators=[MinValueValidator(0), MaxValueValidator(2)])
    top_p = models.FloatField(default=0.9, validators=[MinValueValidator(0.01), MaxValueValidator(1)])
    max_tokens = models.PositiveIntegerField(default=256, validators=[MinValueValidator(1), MaxValueValidator(2048)])
    repetition_penalty = models.FloatField(default=1.1, validators=[MinValueValidator(1), MaxValueValidator(2)])
    is_featured = models.BooleanField(default=False)
    is_listed = models.BooleanField(default=True, help_text=_("Unticked by a moderator: the app leaves the catalog."))
    is_builtin = models.BooleanField(default=False)
    published_at = models.DateTimeField(null=True, blank=True)
    remixed_from = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="remixes")
    # Re-encoded by the store as a 256-pixel PNG (apps/catalog/avatars.py); empty: a disc with the initial.
    avatar = models.ImageField(upload_to="avatars/", blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["visibility", "is_listed", "published_at"])]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("catalog:app", args=[self.slug])

    @property
    def is_published(self) -> bool:
        return self.published_at is not None

    @property
    def avatar_hue(self) -> int:
        """A stable colour for the generated avatar (the first letter on a coloured disc)."""
        return int(hashlib.sha256(self.slug.encode()).hexdigest()[:4], 16) % 360

    @property
    def initial(self) -> str:
        return (self.name.strip()[:1] or "?").upper()

    def settings_snapshot(self) -> dict:
        return {field: getattr(self, field) for field in VERSIONED_FIELDS} | {
            "category": self.category.slug if self.category else None
        }


VERSIONED_FIELDS = [
    "name", "short_description", "description", "kind", "visibility", "instructions", "prompt_template",
    "input_fields", "conversation_starters", "model_reference", "temperature", "top_p", "max_tokens",
    "repetition_penalty",
]


class AppVersion(models.Model):
    """The app's settings each time they were saved, to look back and restore."""

    app = models.ForeignKey(StoreApp, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    settings = models.JSONField()
    created_by = models.ForeignKey(USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-number"]
        constraints = [models.UniqueConstraint(fields=["app", "number"], name="unique_app_version")]

    def __str__(self) -> str:
        return f"{self.app.slug} v{self.number}"


class Review(TimeStampedModel):
    app = models.ForeignKey(StoreApp, on_delete=models.CASCADE, related_name="reviews")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reviews")
    rating = models.PositiveSmallIntegerField(_("rating"), validators=[MinValueValidator(1), MaxValueValidator(5)])
    text = models.TextField(_("review"), blank=True, max_length=2000)

    class Meta:
        ordering = ["-updated_at"]
        constraints = [
            models.UniqueConstraint(fields=["app", "user"], name="one_review_per_user"),
            models.CheckConstraint(condition=models.Q(rating__gte=1, rating__lte=5), name="rating_1_to_5"),
        ]

    def __str__(self) -> str:
        return f"{self.rating}★ {self.app} by {self.user}"


class Report(models.Model):
    class Reason(models.TextChoices):
        HARMFUL = "harmful", _("Harmful or offensive")
        SPAM = "spam", _("Spam or misleading")
        ILLEGAL = "illegal", _("Illegal content")
        OTHER = "other", _("Something else")

    app = models.ForeignKey(StoreApp, on_delete=models.CASCADE, related_name="reports")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    reason = models.CharField(_("reason"), max_length=16, choices=Reason.choices)
    details = models.TextField(_("details"), blank=True, max_length=2000)
    resolved = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["resolved", "-created_at"]

    def __str__(self) -> str:
        return f"{self.get_reason_display()}: {self.app}"

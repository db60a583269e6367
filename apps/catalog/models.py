"""Store apps: what a user builds and publishes, with its settings history, reviews and reports."""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from apps.core.models import TimeStampedModel

USER_MODEL = settings.AUTH_USER_MODEL
LINK_TOKEN_LENGTH = 22  # secrets.token_urlsafe(16): 128 random bits in 22 URL-safe characters ([A-Za-z0-9_-])


def link_token_new() -> str:
    return secrets.token_urlsafe(16)


def address_split(address: str) -> tuple[str, str] | None:
    """`<slug>-<token>` → (slug, token); None for an address that cannot hold a token."""
    if len(address) <= LINK_TOKEN_LENGTH + 1 or address[-LINK_TOKEN_LENGTH - 1] != "-":
        return None
    return address[: -LINK_TOKEN_LENGTH - 1], address[-LINK_TOKEN_LENGTH:]


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
        CLASSIFIER = "classifier", _("Classifier")

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
    # A remix copies what the public sees; the instructions and the prompt template only when the creator ticks this.
    remix_with_instructions = models.BooleanField(
        _("allow remixing with instructions"), default=False,
        help_text=_("A remix copies the public parts of the app (name, description, starters, model, settings). "
                    "Tick this to let it copy your instructions and prompt template too."),
    )
    # The unguessable part of a link-only app's address (`address`): without it, nobody but the creator reaches
    # the app. Made when the app first becomes link-only, kept while it is public, dropped when it turns private
    # (so that making an app private revokes every link shared before; sharing it again gives a new link).
    link_token = models.CharField(max_length=LINK_TOKEN_LENGTH, unique=True, null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["visibility", "is_listed", "published_at"])]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("catalog:app", args=[self.address])

    @property
    def address(self) -> str:
        """How the app is named in its URLs (the page, /api/v1) and as `app:<address>` on /v1: its slug, or for a
        link-only app its slug and its token (`<slug>-<token>`), the only address at which others reach it."""
        if self.visibility == self.Visibility.LINK and self.link_token:
            return f"{self.slug}-{self.link_token}"
        return self.slug

    @property
    def is_published(self) -> bool:
        return self.published_at is not None

    @property
    def avatar_hue(self) -> int:
        """A stable colour for the generated avatar (the first letter on a coloured disc): one of 24 hues, 15 degrees
        apart, each a class of store.css (`hue-<n>`), since the Content-Security-Policy allows no inline style."""
        return int(hashlib.sha256(self.slug.encode()).hexdigest()[:4], 16) % 24 * 15

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
    "repetition_penalty", "remix_with_instructions", "secret_strings",
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

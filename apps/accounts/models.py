from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models
from django.urls import reverse
from django.utils.text import slugify
from django.utils.translation import gettext_lazy as _


class User(AbstractUser):
    """The store's user, custom from the first migration so that fields can be added later without pain."""

    email = models.EmailField(_("email address"), unique=True)
    bio = models.TextField(_("about you"), blank=True, max_length=1000)

    class Meta:
        ordering = ["username"]

    def __str__(self) -> str:
        return self.username

    def get_absolute_url(self) -> str:
        return reverse("accounts:account")

    @property
    def slug(self) -> str:
        """The username as it appears in a fine-tune's model id (`ft:<base>:<owner>:...`)."""
        return slugify(self.username) or f"user{self.pk}"


class APIKeyQuerySet(models.QuerySet):
    def active(self):
        from django.utils import timezone

        now = timezone.now()
        return self.filter(revoked_at__isnull=True).filter(models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now))


class APIKey(models.Model):
    """A secret for `Authorization: Bearer ...`. Only its sha256 is stored: the key is shown once, at creation.

    Keys are 256 random bits, so a plain (unsalted, fast) sha256 is enough: nothing can be guessed, and a
    request finds its key with one indexed lookup instead of a slow password hash.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(_("name"), max_length=100)
    prefix = models.CharField(max_length=16, help_text=_("The first characters, to recognise a key in lists."))
    hashed_key = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(_("expires"), null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = APIKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        from django.utils import timezone

        return self.revoked_at is None and (self.expires_at is None or self.expires_at > timezone.now())


class RateWindow(models.Model):
    """Requests and tokens one scope (a key or a user) used in one fixed window: the limits' atomic counters."""

    scope = models.CharField(max_length=80)
    window_start = models.DateTimeField()
    requests = models.PositiveIntegerField(default=0)
    tokens = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["scope", "window_start"], name="one_counter_per_window")]
        indexes = [models.Index(fields=["window_start"])]

    def __str__(self) -> str:
        return f"{self.scope} @ {self.window_start:%H:%M}: {self.requests} requests, {self.tokens} tokens"

"""Thumbs up or down on an assistant's answer (a chat message or a generator's or translator's run), with an
optional better answer: the rater's own data, which they can export as a training file (services.feedback_export).
An app's creator sees only the counts (selectors.app_feedback_counts)."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from apps.core.models import TimeStampedModel


class Feedback(TimeStampedModel):
    class Rating(models.TextChoices):
        UP = "up", _("Thumbs up")
        DOWN = "down", _("Thumbs down")

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="feedback")
    app = models.ForeignKey("catalog.StoreApp", on_delete=models.CASCADE, related_name="feedback")
    # What is rated: one of the two (a chat's answer is a message; a form's answer lives only in its run's row).
    message = models.OneToOneField("chat.Message", null=True, blank=True, on_delete=models.CASCADE, related_name="feedback")
    run = models.OneToOneField("chat.AppRun", null=True, blank=True, on_delete=models.CASCADE, related_name="feedback")
    rating = models.CharField(max_length=4, choices=Rating.choices)
    correction = models.TextField(blank=True)  # the answer the rater would have wanted
    # A run's exchange, kept when it is rated (runs keep no text), for the rater's own use. `system` holds the app's
    # instructions only where the rater may keep them (their own app, a built-in); `prompt` is then the user's turn
    # as the model saw it, else the rater's own input alone (another creator's template is theirs).
    system = models.TextField(blank=True)
    prompt = models.TextField(blank=True)
    answer = models.TextField(blank=True)

    class Meta:
        ordering = ["-updated_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(message__isnull=False, run__isnull=True) | Q(message__isnull=True, run__isnull=False),
                name="feedback_rates_a_message_or_a_run",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.rating} on {'message' if self.message_id else 'run'} {self.message_id or self.run_id}"

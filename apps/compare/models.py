"""Side-by-side comparisons: one prompt, two answers (two models or two apps of one kind), and the owner's vote."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from apps.compare import rating


class Comparison(models.Model):
    class Kind(models.TextChoices):
        MODEL = "model", _("Models")
        CHATBOT = "chatbot", _("Chatbot apps")
        GENERATOR = "generator", _("Text generator apps")
        TRANSLATOR = "translator", _("Translator apps")

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="comparisons")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    messages = models.JSONField()  # the conversation both sides answer, ending with the user's prompt
    # Model comparisons: the sampling both models use (apps use their own settings); translators: the target.
    options = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"comparison {self.pk} by {self.owner}"


class Answer(models.Model):
    """One side of a comparison: what runs (its entry on the leaderboard), its public settings and its answer."""

    class Side(models.TextChoices):
        A = "a", "A"
        B = "b", "B"

    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="answers")
    side = models.CharField(max_length=1, choices=Side.choices)
    # What is rated: a model version (`<id>@v<N>`, so that a moved alias does not mix two versions) or `app:<slug>`.
    entry = models.CharField(max_length=300)
    reference = models.CharField(max_length=300)  # as the user picked it: a model reference or `app:<address>`
    label = models.CharField(max_length=300)
    settings = models.JSONField(default=dict)  # public settings only, never an app's instructions
    text = models.TextField(blank=True)
    finish_reason = models.CharField(max_length=32, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["comparison", "side"]
        constraints = [models.UniqueConstraint(fields=["comparison", "side"], name="one_answer_per_side")]

    def __str__(self) -> str:
        return f"{self.comparison_id}{self.side}: {self.entry}"


class Vote(models.Model):
    class Outcome(models.TextChoices):
        A = rating.A, _("A is better")
        B = rating.B, _("B is better")
        TIE = rating.TIE, _("Tie")
        BOTH_BAD = rating.BOTH_BAD, _("Both are bad")

    comparison = models.OneToOneField(Comparison, on_delete=models.CASCADE, related_name="vote")
    voter = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="comparison_votes")
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.outcome} on comparison {self.comparison_id}"

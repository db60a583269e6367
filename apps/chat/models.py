"""Conversations with chatbot apps, and every run of any app (the basis of usage and trending)."""

from django.conf import settings
from django.db import models

from apps.core.models import TimeStampedModel


class Conversation(TimeStampedModel):
    app = models.ForeignKey("catalog.StoreApp", on_delete=models.CASCADE, related_name="conversations")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    title = models.CharField(max_length=120, default="New chat")

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return self.title


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField()
    finish_reason = models.CharField(max_length=16, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"


class AppRun(models.Model):
    """One generation, by an app or a model, from a page or the API: who, with which key, how many tokens, when.

    The basis of usage (account page), trending (runs of the last 7 days) and an app's conversation count.
    """

    app = models.ForeignKey("catalog.StoreApp", null=True, blank=True, on_delete=models.CASCADE, related_name="runs")
    model = models.CharField(max_length=300, blank=True)  # the model reference the run used
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    api_key = models.ForeignKey("accounts.APIKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    conversation = models.ForeignKey(Conversation, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    finish_reason = models.CharField(max_length=16, blank=True)
    # A signed-in user's run of a generator or translator form: the fingerprint of its prompt and answer
    # (chat.services.exchange_digest), never the text. Feedback on the run keeps the text the rater sends with it.
    text_digest = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.app_id} run {self.pk}"


class StreamSlot(models.Model):
    """A generation running now, held by one scope (a user, an API key, an anonymous address): the basis of the cap
    on concurrent streams. The run deletes its slots when it ends; a slot whose run died without a word (a killed
    process) stops counting once its heartbeat is older than RUN_STREAM_STALE_SECONDS."""

    scope = models.CharField(max_length=80)
    heartbeat = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["scope", "heartbeat"])]

    def __str__(self) -> str:
        return f"{self.scope} @ {self.heartbeat:%H:%M:%S}"

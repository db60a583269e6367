"""Knowledge files: a creator's documents on an app, split into chunks that the app's runs retrieve and cite.

The file row is the truth of its indexing (status, progress, message); its chunks are searched through the
database's own full-text engine (`apps.knowledge.search`): an FTS5 table kept by triggers on SQLite, a generated
`tsvector` column with a GIN index on PostgreSQL. Neither is a Django field: the migration creates them.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models, transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver
from django.utils.translation import gettext_lazy as _

from apps.catalog.models import StoreApp
from apps.core.models import TimeStampedModel


def knowledge_file_path(instance, filename) -> str:
    return f"knowledge/{instance.app_id}/{uuid.uuid4().hex}"


class KnowledgeFile(TimeStampedModel):
    class Status(models.TextChoices):
        UPLOADED = "uploaded", _("Uploaded")
        INDEXING = "indexing", _("Indexing")
        READY = "ready", _("Ready")
        ERROR = "error", _("Error")

    class ContentType(models.TextChoices):
        TEXT = "text/plain", _("Plain text")
        MARKDOWN = "text/markdown", _("Markdown")
        HTML = "text/html", _("HTML")
        PDF = "application/pdf", _("PDF")

    app = models.ForeignKey(StoreApp, on_delete=models.CASCADE, related_name="knowledge_files")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="knowledge_files")
    name = models.CharField(max_length=200)
    content_type = models.CharField(max_length=32, choices=ContentType.choices)  # detected from the bytes
    size = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    file = models.FileField(upload_to=knowledge_file_path, max_length=300)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.UPLOADED)
    message = models.CharField(max_length=500, blank=True)  # why indexing failed, in words a creator can act on
    progress = models.FloatField(default=0.0)  # 0..1 while indexing
    pages = models.PositiveIntegerField(default=0)  # a PDF's pages; for text, one per 3,000 characters
    chunk_count = models.PositiveIntegerField(default=0)
    token_count = models.PositiveIntegerField(default=0)
    indexed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [models.UniqueConstraint(fields=["app", "name"], name="knowledge_file_name_unique_per_app")]

    def __str__(self) -> str:
        return self.name


class Chunk(models.Model):
    """A passage of a file: what retrieval ranks, the prompt quotes and the answer's sources show."""

    file = models.ForeignKey(KnowledgeFile, on_delete=models.CASCADE, related_name="chunks")
    ordinal = models.PositiveIntegerField()
    heading = models.CharField(max_length=300, blank=True)
    text = models.TextField()
    # CJK text as overlapping character bigrams, space separated: what PostgreSQL's parser needs to find a Chinese
    # word inside a run of characters (it reads a whole run as one word). Empty for text without CJK.
    grams = models.TextField(blank=True)
    token_count = models.PositiveIntegerField()
    start = models.PositiveIntegerField()  # character offsets in the file's extracted text
    end = models.PositiveIntegerField()

    class Meta:
        ordering = ["file", "ordinal"]
        constraints = [models.UniqueConstraint(fields=["file", "ordinal"], name="knowledge_chunk_ordinal_unique")]

    def __str__(self) -> str:
        return f"{self.file.name} #{self.ordinal}"


@receiver(post_delete, sender=KnowledgeFile)
def stored_file_delete(sender, instance: KnowledgeFile, **kwargs) -> None:
    """A deleted file's bytes leave the storage once the deletion commits, however the row went (its own deletion,
    or its app's: the cascade deletes rows only)."""
    storage, name = instance.file.storage, instance.file.name
    if name:
        transaction.on_commit(lambda: storage.delete(name) if storage.exists(name) else None)

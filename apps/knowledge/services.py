"""Writes of knowledge files: upload (or replace), delete, and the indexing that the worker runs.

The creator's alone: every function here takes an app its caller owns (`apps.knowledge.selectors` checks that),
and nothing here hands a file's content to anyone but the indexer. A remix never copies them: the files belong to
their app (`KnowledgeFile.app`), and a remix is a new app.
"""

from __future__ import annotations

import hashlib
import logging
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Sum
from django.utils import timezone
from django.utils.translation import gettext as _

from apps.core.errors import InvalidRequest, StoreError
from apps.knowledge import dispatch
from apps.knowledge.chunking import chunk_sections
from apps.knowledge.extract import ExtractionError, detect, extract
from apps.knowledge.models import Chunk, KnowledgeFile
from apps.knowledge.search import cjk_grams
from apps.registry.selectors import model_version_path

logger = logging.getLogger(__name__)
INDEX_BATCH = 64  # chunks written at a time, the progress updated after each batch


class KnowledgeQuotaExceeded(StoreError):
    status = 429
    type = "insufficient_quota"
    code = "knowledge_quota_exceeded"


class FileTooLarge(StoreError):
    status = 413
    code = "file_too_large"


def _name(upload) -> str:
    name = Path(getattr(upload, "name", "") or "").name.strip()
    return (name or "document")[:200]


def _read(upload) -> bytes:
    if upload.size > settings.KNOWLEDGE_MAX_FILE_BYTES:
        raise FileTooLarge(_("The file is %(size)s bytes; a knowledge file may have at most %(limit)s.")
                           % {"size": f"{upload.size:,}", "limit": f"{settings.KNOWLEDGE_MAX_FILE_BYTES:,}"}, param="file")
    data = upload.read()
    if not data.strip():
        raise InvalidRequest(_("The file is empty."), param="file", code="empty_file")
    return data


def _quota_check(*, app, owner, size: int, replacing: KnowledgeFile | None) -> None:
    files = KnowledgeFile.objects.filter(owner=owner)
    if replacing is not None:
        files = files.exclude(pk=replacing.pk)
    mine = files.aggregate(n=Count("pk"), bytes=Sum("size"))
    if replacing is None and files.filter(app=app).count() >= settings.KNOWLEDGE_MAX_FILES_PER_APP:
        raise KnowledgeQuotaExceeded(_("This app has %(n)s knowledge files, the most it may have: delete one first.")
                                     % {"n": settings.KNOWLEDGE_MAX_FILES_PER_APP}, param="file")
    if replacing is None and mine["n"] >= settings.KNOWLEDGE_MAX_FILES_PER_USER:
        raise KnowledgeQuotaExceeded(_("You have %(n)s knowledge files, the most you may have: delete some first.")
                                     % {"n": settings.KNOWLEDGE_MAX_FILES_PER_USER}, param="file")
    if (mine["bytes"] or 0) + size > settings.KNOWLEDGE_MAX_BYTES_PER_USER:
        raise KnowledgeQuotaExceeded(_("Your knowledge files would take %(used)s bytes; you may keep %(limit)s. "
                                       "Delete some first.") % {"used": f"{(mine['bytes'] or 0) + size:,}",
                                                                "limit": f"{settings.KNOWLEDGE_MAX_BYTES_PER_USER:,}"},
                                     param="file")


def knowledge_file_upload(*, app, user, upload, replace: KnowledgeFile | None = None) -> KnowledgeFile:
    """Add a file to an app the user owns, or put new content in one of its files (`replace`); either way it is
    (re-)indexed by a worker. A file of the same name on the app is replaced too: uploading a changed document
    again updates it. Its type comes from its content (the name's extension does not count)."""
    data = _read(upload)
    content_type = detect(data)  # refuses images, archives and other binary files at once
    name = replace.name if replace is not None else _name(upload)
    if replace is None:
        replace = KnowledgeFile.objects.filter(app=app, name=name).first()
    _quota_check(app=app, owner=user, size=len(data), replacing=replace)
    digest = hashlib.sha256(data).hexdigest()
    with transaction.atomic():
        if replace is not None:
            knowledge = KnowledgeFile.objects.select_for_update().get(pk=replace.pk)
            old_file = knowledge.file.name
            knowledge.chunks.all().delete()  # the old passages leave the search at once
        else:
            knowledge, old_file = KnowledgeFile(app=app, owner=user, name=name), None
        knowledge.content_type, knowledge.size, knowledge.sha256 = content_type, len(data), digest
        knowledge.status, knowledge.message, knowledge.progress = KnowledgeFile.Status.UPLOADED, "", 0.0
        knowledge.chunk_count = knowledge.token_count = knowledge.pages = 0
        knowledge.indexed_at = None
        upload.seek(0)
        knowledge.file.save(name, upload, save=False)
        knowledge.save()
        if old_file:
            _delete_stored_on_commit(knowledge.file.storage, old_file)
        dispatch.knowledge_index_enqueue(file_id=knowledge.pk)
    return knowledge


def knowledge_file_delete(*, knowledge: KnowledgeFile) -> None:
    """The file and its passages (out of the search at once); its stored bytes go once the deletion commits
    (`models.stored_file_delete`, which also cleans up after an app deleted with its files)."""
    knowledge.delete()


def _delete_stored_on_commit(storage, name: str) -> None:
    transaction.on_commit(lambda: storage.delete(name) if name and storage.exists(name) else None)


# --- Indexing (the worker) -----------------------------------------------------------------------------------
@lru_cache(maxsize=4)
def _tokenizer_at(path: str):
    # The tokenizers library (Rust, no torch): the worker and the web process stay free of transformers here.
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)


def base_tokenizer():
    """The base model's tokenizer (tokenizer.json of its `latest` version): passages are measured in its tokens."""
    folder = model_version_path(reference=f"{settings.BASE_MODEL_ID}@latest", user=None, check_access=False)
    return _tokenizer_at(str(folder / "tokenizer.json"))


def _status(knowledge_id: int, **fields) -> int:
    return KnowledgeFile.objects.filter(pk=knowledge_id).update(updated_at=timezone.now(), **fields)


def knowledge_file_index(*, file_id: int, tokenizer=None) -> KnowledgeFile | None:
    """Extract, chunk and index one file; the row tells the builder how far it got, and why it failed.

    A file replaced or deleted meanwhile is left alone (its sha256 changed, or it is gone): the newer upload's
    own task indexes it."""
    knowledge = KnowledgeFile.objects.filter(pk=file_id).first()
    if knowledge is None:
        return None
    digest = knowledge.sha256
    _status(file_id, status=KnowledgeFile.Status.INDEXING, progress=0.0, message="")
    try:
        with knowledge.file.open("rb") as fh:
            data = fh.read()
        document = extract(data)
        passages = chunk_sections(document.sections, tokenizer=tokenizer or base_tokenizer(),
                                  size=settings.KNOWLEDGE_CHUNK_TOKENS, overlap=settings.KNOWLEDGE_CHUNK_OVERLAP)
    except ExtractionError as exc:
        _status(file_id, status=KnowledgeFile.Status.ERROR, message=exc.message[:500], progress=0.0)
        return KnowledgeFile.objects.filter(pk=file_id).first()
    except (OSError, StoreError) as exc:  # a file gone from storage, no base model registered
        logger.warning("knowledge file %s: indexing failed: %s", file_id, exc)
        _status(file_id, status=KnowledgeFile.Status.ERROR, progress=0.0,
                message=_("The file could not be indexed (%(reason)s). Upload it again later.")
                % {"reason": getattr(exc, "message", None) or exc.__class__.__name__})
        return KnowledgeFile.objects.filter(pk=file_id).first()
    with transaction.atomic():
        current = KnowledgeFile.objects.select_for_update().filter(pk=file_id, sha256=digest).first()
        if current is None:
            return None  # replaced or deleted while it was read
        current.chunks.all().delete()
    for start in range(0, len(passages), INDEX_BATCH):
        batch = passages[start:start + INDEX_BATCH]
        with transaction.atomic():
            if not KnowledgeFile.objects.select_for_update().filter(pk=file_id, sha256=digest).exists():
                return None
            Chunk.objects.bulk_create(
                Chunk(file_id=file_id, ordinal=p.ordinal, heading=p.heading, text=p.text, grams=" ".join(cjk_grams(p.text)),
                      token_count=p.token_count, start=p.start, end=p.end)
                for p in batch
            )
            _status(file_id, progress=min(1.0, (start + len(batch)) / len(passages)))
    done = KnowledgeFile.objects.filter(pk=file_id, sha256=digest).update(
        status=KnowledgeFile.Status.READY, progress=1.0, content_type=document.content_type, pages=document.pages,
        chunk_count=len(passages), token_count=sum(p.token_count for p in passages), indexed_at=timezone.now(),
        updated_at=timezone.now())
    return KnowledgeFile.objects.filter(pk=file_id).first() if done else None

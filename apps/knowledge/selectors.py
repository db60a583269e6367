"""Reads of knowledge files: the creator's own list (metadata only), and the passages a run retrieves.

Nobody but an app's creator reaches its files: for anyone else an app's knowledge is a 404, whether they may use the
app or not. Users of the app see only the passages an answer cites (`Source`), never a list or a download.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from django.conf import settings
from django.db.models import QuerySet
from django.utils.translation import gettext as _

from apps.catalog.access import access_app
from apps.catalog.models import StoreApp
from apps.core.errors import NotFound
from apps.knowledge.models import Chunk, KnowledgeFile
from apps.knowledge.search import search_backend


def access_knowledge_app(*, user, slug: str) -> StoreApp:
    """An app whose knowledge files the user may see and change: their own. Anyone else: 404 (no hint that the
    app has files, even on an app they may use)."""
    app = access_app(user=user, slug=slug)
    if not (user is not None and user.is_authenticated and app.creator_id == user.pk):
        raise NotFound(_("The app %(slug)r has no knowledge files you can see.") % {"slug": slug}, code="not_found")
    return app


def access_knowledge_file(*, user, slug: str, file_id) -> KnowledgeFile:
    app = access_knowledge_app(user=user, slug=slug)
    try:
        return KnowledgeFile.objects.get(app=app, pk=int(file_id))
    except (KnowledgeFile.DoesNotExist, TypeError, ValueError):
        raise NotFound(_("No such knowledge file on this app."), code="knowledge_file_not_found") from None


def knowledge_file_list(*, app: StoreApp) -> QuerySet[KnowledgeFile]:
    return KnowledgeFile.objects.filter(app=app).order_by("name", "id")


@dataclass
class Source:
    """A passage a run put in its prompt, as the answer cites it: `[n]` in the prompt is `index` n."""

    index: int
    file: str
    heading: str
    text: str
    chunk: int
    tokens: int

    def public(self) -> dict:
        """What the caller sees: the file's name and the passage (no file id, no offsets)."""
        data = asdict(self)
        data.pop("tokens")
        return data


def app_has_knowledge(app: StoreApp) -> bool:
    return app.pk is not None and KnowledgeFile.objects.filter(app=app, status=KnowledgeFile.Status.READY).exists()


def knowledge_search(*, app: StoreApp, query: str, limit: int) -> list[Chunk]:
    """The app's passages that best answer `query`, best first (its ready files only)."""
    hits = search_backend().search(app_id=app.pk, query=query, limit=limit)
    chunks = Chunk.objects.select_related("file").in_bulk([h.chunk_id for h in hits])
    return [chunks[h.chunk_id] for h in hits if h.chunk_id in chunks]


SOURCE_OVERHEAD_TOKENS = 16  # the marker, the file's name and the heading of a passage in the prompt


def knowledge_sources(*, app: StoreApp, query: str, budget: int) -> list[Source]:
    """The top passages for `query` that fit in `budget` tokens (and the KNOWLEDGE_* caps), numbered from 1."""
    budget = min(budget, settings.KNOWLEDGE_PROMPT_TOKENS)
    if budget <= 0 or not query.strip() or not app_has_knowledge(app):
        return []
    sources, used = [], 0
    # A few more than needed: a long passage that does not fit leaves room for a shorter one after it.
    for chunk in knowledge_search(app=app, query=query, limit=settings.KNOWLEDGE_TOP_K * 2):
        cost = chunk.token_count + SOURCE_OVERHEAD_TOKENS
        if used + cost > budget:
            continue
        used += cost
        sources.append(Source(len(sources) + 1, chunk.file.name, chunk.heading, chunk.text, chunk.pk, chunk.token_count))
        if len(sources) == settings.KNOWLEDGE_TOP_K:
            break
    return sources

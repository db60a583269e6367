"""Indexing by the real service and retrieval on the database the suite runs on (SQLite FTS5 by default,
PostgreSQL full-text in CI): the same assertions hold on both."""

from __future__ import annotations

import pytest
from django.db import connection

from apps.catalog.services import app_remix
from apps.knowledge.models import Chunk, KnowledgeFile
from apps.knowledge.search import search_backend
from apps.knowledge.selectors import knowledge_search, knowledge_sources
from apps.knowledge.services import KnowledgeQuotaExceeded, knowledge_file_delete
from tests.catalog.conftest import make_app
from tests.knowledge.conftest import GUIDE, index, upload

pytestmark = pytest.mark.django_db


def top(app, query):
    found = knowledge_search(app=app, query=query, limit=3)
    return found[0] if found else None


def test_the_backend_is_the_databases_own_engine(guide_app):
    backend = search_backend()
    assert backend.vendor == connection.vendor
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT sql FROM sqlite_master WHERE name = 'knowledge_chunk_fts'")
            assert "tokenize='trigram'" in cursor.fetchone()[0]
        else:
            cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'knowledge_chunk_search_gin'")
            assert "gin (search_vector)" in cursor.fetchone()[0]


def test_indexing_fills_the_row_and_the_right_passage_ranks_first(guide_app):
    knowledge = guide_app.knowledge_files.get()
    assert (knowledge.status, knowledge.progress, knowledge.content_type) == ("ready", 1.0, "text/markdown")
    assert knowledge.chunk_count == Chunk.objects.filter(file=knowledge).count() >= 4
    assert knowledge.token_count > 50 and knowledge.pages == 1
    assert "27 months" in top(guide_app, "How long is the warranty?").text
    assert "41 days" in top(guide_app, "How many days does the battery last?").text
    assert top(guide_app, "Which company made it?").heading == "Zephyr X200 guide"
    assert top(guide_app, "quantum chromodynamics") is None
    # Chinese: a word inside a run of characters is found (trigrams on FTS5, bigrams on PostgreSQL).
    assert "保修期" in top(guide_app, "保修期多长？").text


def test_sources_fit_the_budget(guide_app):
    sources = knowledge_sources(app=guide_app, query="warranty battery", budget=10_000)
    assert 1 <= len(sources) <= 3 and [s.index for s in sources] == list(range(1, len(sources) + 1))
    assert sources[0].file == "guide.md"
    smallest = min(s.tokens for s in sources)
    tight = knowledge_sources(app=guide_app, query="warranty battery", budget=smallest + 16)
    assert len(tight) == 1
    assert knowledge_sources(app=guide_app, query="warranty", budget=0) == []


def test_a_changed_file_is_reindexed_and_a_deleted_one_dropped(guide_app, user):
    old = guide_app.knowledge_files.get()
    changed = upload(guide_app, user, "guide.md", GUIDE.replace("27 months", "33 months"))
    assert changed.pk == old.pk and changed.status == "uploaded"
    assert Chunk.objects.filter(file=changed).count() == 0  # the old passages left the search at once
    assert top(guide_app, "warranty") is None
    index(changed)
    assert "33 months" in top(guide_app, "warranty months").text
    knowledge_file_delete(knowledge=changed)
    assert not Chunk.objects.exists() and top(guide_app, "warranty") is None


def test_another_apps_passages_never_come_back(guide_app, user, other_user, media):
    other = make_app(other_user, name="Other Helper")
    index(upload(other, other_user, "notes.txt", "The warranty of the Brightfield kettle is 5 years."))
    assert "kettle" in top(other, "warranty").text
    assert "kettle" not in top(guide_app, "warranty").text


def test_bad_files_get_a_clear_message(guide_app, user):
    from tests.knowledge.test_extract_chunk import pdf_bytes

    scanned = index(upload(guide_app, user, "scan.pdf", pdf_bytes(["", ""])))
    assert scanned.status == "error" and "no text" in scanned.message
    locked = index(upload(guide_app, user, "locked.txt", pdf_bytes(["x"], password="pw")))  # a PDF by its content
    assert locked.content_type == "application/pdf" and "encrypted" in locked.message
    with pytest.raises(Exception, match="JPEG image"):
        upload(guide_app, user, "photo.md", b"\xff\xd8\xff\xe0" + b"\x00" * 100)


def test_caps_per_app_and_per_user(guide_app, user, settings):
    settings.KNOWLEDGE_MAX_FILES_PER_APP = 2
    upload(guide_app, user, "two.txt", "second file")
    with pytest.raises(KnowledgeQuotaExceeded, match="most it may have"):
        upload(guide_app, user, "three.txt", "third file")
    upload(guide_app, user, "two.txt", "second file, changed")  # replacing is not adding
    settings.KNOWLEDGE_MAX_FILES_PER_APP = 20
    used = sum(KnowledgeFile.objects.filter(owner=user).values_list("size", flat=True))
    settings.KNOWLEDGE_MAX_BYTES_PER_USER = used + 1000
    with pytest.raises(KnowledgeQuotaExceeded, match="bytes"):
        upload(guide_app, user, "big.txt", "x" * 1001)
    upload(guide_app, user, "big.txt", "x" * 1000)
    settings.KNOWLEDGE_MAX_FILE_BYTES = 100
    with pytest.raises(Exception, match="at most 100"):
        upload(guide_app, user, "big.txt", "y" * 101)


def test_a_remix_never_copies_knowledge_files(guide_app, other_user):
    copy = app_remix(app=guide_app, user=other_user)
    assert not KnowledgeFile.objects.filter(app=copy).exists()
    assert knowledge_search(app=copy, query="warranty", limit=3) == []

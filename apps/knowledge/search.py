"""Retrieval over an app's passages, one interface on the database's own full-text engine.

- **PostgreSQL** (production, CI): a generated `tsvector` column on `knowledge_chunk` (the heading weighted A,
  the text B, both with the `english` configuration; the CJK bigrams of `Chunk.grams` with `simple`), a GIN index,
  queried with `websearch_to_tsquery` and ranked with `ts_rank_cd`.
- **SQLite** (the embedded default): an FTS5 table with the `trigram` tokenizer (which finds words inside runs of
  Chinese characters as well as English ones), kept in step with `knowledge_chunk` by triggers, ranked with `bm25`.

Both are created by the app's migration (`SCHEMA`), neither is a Django field. A question is turned into an OR of
its words (common English words left out) and, for Chinese, of its character bigrams (PostgreSQL) or trigrams
(FTS5): a passage needs only some of the words to be found, and the engine ranks those that hold the most.
"""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass

from django.db import connection

_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af"
_CJK_RUN = re.compile(f"[{_CJK}]+")
_WORD = re.compile(f"[^\\W{_CJK}_]+", re.UNICODE)
STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both but by
can could did do does doing down during each few for from further had has have having he her here hers herself him
himself his how i if in into is it its itself just me more most my myself no nor not now of off on once only or other
our ours ourselves out over own same she should so some such than that the their theirs them themselves then there
these they this those through to too under until up very was we were what when where which while who whom why will
with would you your yours yourself yourselves tell please give know say says said
""".split())


def cjk_grams(text: str, n: int = 2) -> list[str]:
    """Overlapping character n-grams of every run of CJK characters (a run shorter than n: the run itself)."""
    grams = []
    for run in _CJK_RUN.findall(text):
        grams.extend([run] if len(run) <= n else [run[i:i + n] for i in range(len(run) - n + 1)])
    return grams


def query_words(text: str) -> list[str]:
    """The words of a question that can tell passages apart (lower case, no common English words), in order."""
    seen, words = set(), []
    for word in _WORD.findall(text.lower()):
        if word not in STOPWORDS and word not in seen and (len(word) > 1 or word.isdigit()):
            seen.add(word)
            words.append(word)
    return words


@dataclass
class Hit:
    chunk_id: int
    score: float  # higher is better, on the backend's own scale


class SearchBackend(abc.ABC):
    """One search interface over the database's own engine; `search_backend()` picks the one for the connection."""

    vendor = ""
    SCHEMA: list[str] = []  # what the migration creates
    UNDO: list[str] = []

    @abc.abstractmethod
    def search(self, *, app_id: int, query: str, limit: int) -> list[Hit]:
        """The app's best `limit` passages for `query`, best first."""


class PostgresSearch(SearchBackend):
    vendor = "postgresql"
    SCHEMA = [
        """ALTER TABLE knowledge_chunk ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (
               setweight(to_tsvector('english', heading), 'A') || setweight(to_tsvector('english', text), 'B')
               || setweight(to_tsvector('simple', grams), 'B')) STORED""",
        "CREATE INDEX knowledge_chunk_search_gin ON knowledge_chunk USING gin (search_vector)",
    ]
    UNDO = ["ALTER TABLE knowledge_chunk DROP COLUMN search_vector"]
    # ts_rank_cd's weights of the labels D, C, B, A: a word of the passage's text (B) counts twice a word of its
    # heading (A). A heading holds the document's title in every passage of it (Markdown's heading path), so
    # weighted higher it would rank a document's first passage over the one that answers.
    WEIGHTS = [0.1, 0.2, 1.0, 0.5]

    def search(self, *, app_id, query, limit):
        words, grams = self._distinctive(app_id, query_words(query)), list(dict.fromkeys(cjk_grams(query)))
        parts, params = [], []
        if words:  # websearch_to_tsquery reads `or` between words and never fails on what a user typed
            parts.append("websearch_to_tsquery('english', %s)")
            params.append(" or ".join(words))
        if grams:
            parts.append("websearch_to_tsquery('simple', %s)")
            params.append(" or ".join(grams))
        if not parts:
            return []
        sql = f"""
            WITH q AS (SELECT ({' || '.join(parts)}) AS query)
            SELECT c.id, ts_rank_cd(%s::float4[], c.search_vector, q.query) AS score
            FROM knowledge_chunk c JOIN knowledge_knowledgefile f ON f.id = c.file_id, q
            WHERE f.app_id = %s AND f.status = 'ready' AND c.search_vector @@ q.query
            ORDER BY score DESC, c.id LIMIT %s"""
        with connection.cursor() as cursor:
            cursor.execute(sql, [*params, self.WEIGHTS, app_id, limit])
            return [Hit(pk, float(score)) for pk, score in cursor.fetchall()]

    COMMON_SHARE = 0.5  # a word in more than this share of an app's passages tells none of them apart

    def _distinctive(self, app_id: int, words: list[str]) -> list[str]:
        """The words that are not common in this app's passages. `ts_rank_cd` weighs every matched word alike (it
        has no inverse document frequency), so a word that most passages share (the product a manual is about)
        would rank the passages that repeat it over the one that answers; `ts_stat` counts, per lexeme, the
        passages that hold it. At least the rarest word is kept."""
        if len(words) < 2:
            return words
        passages = f"""SELECT c.search_vector FROM knowledge_chunk c JOIN knowledge_knowledgefile f ON f.id = c.file_id
                       WHERE f.app_id = {int(app_id)} AND f.status = 'ready'"""
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM ({passages}) p")
            total = cursor.fetchone()[0]
            if total < 4:
                return words
            cursor.execute(
                """SELECT w, coalesce(max(s.ndoc), 0) FROM unnest(%s::text[]) AS w
                   LEFT JOIN LATERAL unnest(to_tsvector('english', w)) AS l ON true
                   LEFT JOIN ts_stat(%s) AS s ON s.word = l.lexeme GROUP BY w""", [words, passages])
            counts = dict(cursor.fetchall())
        kept = [w for w in words if counts.get(w, 0) <= total * self.COMMON_SHARE]
        return kept or [min(words, key=lambda w: counts.get(w, 0))]


class SqliteSearch(SearchBackend):
    vendor = "sqlite"
    SCHEMA = [
        """CREATE VIRTUAL TABLE knowledge_chunk_fts USING fts5(heading, text, content='knowledge_chunk',
               content_rowid='id', tokenize='trigram')""",
        """CREATE TRIGGER knowledge_chunk_fts_insert AFTER INSERT ON knowledge_chunk BEGIN
               INSERT INTO knowledge_chunk_fts(rowid, heading, text) VALUES (new.id, new.heading, new.text); END""",
        """CREATE TRIGGER knowledge_chunk_fts_delete AFTER DELETE ON knowledge_chunk BEGIN
               INSERT INTO knowledge_chunk_fts(knowledge_chunk_fts, rowid, heading, text)
               VALUES ('delete', old.id, old.heading, old.text); END""",
        """CREATE TRIGGER knowledge_chunk_fts_update AFTER UPDATE ON knowledge_chunk BEGIN
               INSERT INTO knowledge_chunk_fts(knowledge_chunk_fts, rowid, heading, text)
               VALUES ('delete', old.id, old.heading, old.text);
               INSERT INTO knowledge_chunk_fts(rowid, heading, text) VALUES (new.id, new.heading, new.text); END""",
    ]
    UNDO = [f"DROP TRIGGER knowledge_chunk_fts_{event}" for event in ("insert", "delete", "update")] + [
        "DROP TABLE knowledge_chunk_fts"]

    def search(self, *, app_id, query, limit):
        # The trigram tokenizer matches substrings of three characters or more: shorter words cannot be asked for.
        terms = [w for w in query_words(query) if len(w) >= 3] + list(dict.fromkeys(cjk_grams(query, 3)))
        terms = [t for t in terms if len(t) >= 3]
        if not terms:
            return []
        match = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
        sql = """
            SELECT c.id, -bm25(knowledge_chunk_fts, 2.0, 1.0) AS score
            FROM knowledge_chunk_fts JOIN knowledge_chunk c ON c.id = knowledge_chunk_fts.rowid
            JOIN knowledge_knowledgefile f ON f.id = c.file_id
            WHERE knowledge_chunk_fts MATCH %s AND f.app_id = %s AND f.status = 'ready'
            ORDER BY score DESC, c.id LIMIT %s"""
        with connection.cursor() as cursor:
            cursor.execute(sql, [match, app_id, limit])
            return [Hit(pk, float(score)) for pk, score in cursor.fetchall()]


BACKENDS = {b.vendor: b for b in (PostgresSearch, SqliteSearch)}


def search_backend() -> SearchBackend:
    """The backend of the database in use; another database has no full-text search here."""
    try:
        return BACKENDS[connection.vendor]()
    except KeyError:
        raise RuntimeError(f"knowledge search supports PostgreSQL and SQLite, not {connection.vendor}") from None

"""Text out of a knowledge file: plain text, Markdown, HTML or PDF, the type told by the bytes, never the name.

No Django here: `extract(data)` takes the file's bytes and returns its `Document` (the type, the sections under
their headings, the page count), or raises `ExtractionError` with a message the creator can act on.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

from apps.core.errors import InvalidRequest

TEXT, MARKDOWN, HTML, PDF = "text/plain", "text/markdown", "text/html", "application/pdf"
CHARS_PER_PAGE = 3000  # a text file's "pages", for the indexing speed (pages/s) measured against PDFs


class ExtractionError(InvalidRequest):
    def __init__(self, message: str):
        super().__init__(message, code="unreadable_file", param="file")


@dataclass
class Section:
    heading: str
    text: str


@dataclass
class Document:
    content_type: str
    sections: list[Section] = field(default_factory=list)
    pages: int = 0

    @property
    def text(self) -> str:
        return "\n\n".join(s.text for s in self.sections)


# Magic numbers of what people upload by mistake: named, so the message says what the file is.
_BINARY_KINDS = [
    (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
    (b"PK\x03\x04", "a ZIP archive (or a Word/Excel document)"), (b"\x1f\x8b", "a gzip archive"),
    (b"\xd0\xcf\x11\xe0", "an old Microsoft Office document"), (b"RIFF", "a media file"),
]
_HTML_START = re.compile(rb"^\s*(<!--.*?-->\s*)*(<!doctype\s+html|<html[\s>]|<head[\s>]|<body[\s>])", re.I | re.S)
_HTML_TAGS = re.compile(r"</(p|div|h[1-6]|li|ul|ol|table|tr|td|span|a|section|article|body|html)>", re.I)
_MD_SIGNS = [
    re.compile(r"^#{1,6}\s+\S", re.M),  # ATX headings
    re.compile(r"^```", re.M),  # fenced code
    re.compile(r"^\s*[-*+]\s+\S", re.M),  # bullet lists
    re.compile(r"\[[^\]\n]+\]\([^)\s]+\)"),  # links
    re.compile(r"^.+\n(=+|-+)\s*$", re.M),  # setext headings
    re.compile(r"\*\*[^*\n]+\*\*"),  # bold
]


def detect(data: bytes) -> str:
    """The file's type from its content: a PDF by its header, else text (UTF-8) that looks like HTML or Markdown
    or neither. Anything else is refused."""
    if data.lstrip()[:5] == b"%PDF-":
        return PDF
    for magic, kind in _BINARY_KINDS:
        if data.startswith(magic):
            raise ExtractionError(f"This file is {kind}, not text, Markdown, HTML or PDF.")
    text = decode(data)
    if _HTML_START.match(data[:4096]) or len(_HTML_TAGS.findall(text[:20000])) >= 3:
        return HTML
    if sum(bool(sign.search(text[:20000])) for sign in _MD_SIGNS) >= 1:
        return MARKDOWN
    return TEXT


def decode(data: bytes) -> str:
    if b"\x00" in data[:8192]:
        raise ExtractionError("This file is binary, not text, Markdown, HTML or PDF.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ExtractionError("This file is not UTF-8 text: save it as UTF-8 (or as PDF) and upload it again.") from None


def extract(data: bytes) -> Document:
    content_type = detect(data)
    if content_type == PDF:
        return _pdf(data)
    text = decode(data).replace("\r\n", "\n").replace("\r", "\n")
    if content_type == HTML:
        sections = _html(text)
    elif content_type == MARKDOWN:
        sections = _markdown(text)
    else:
        sections = [Section("", text.strip())]
    sections = [s for s in sections if s.text.strip()]
    if not sections:
        raise ExtractionError("This file holds no text.")
    document = Document(content_type, sections)
    document.pages = max(1, -(-len(document.text) // CHARS_PER_PAGE))
    return document


# --- Markdown: sections under their ATX headings (the heading path, "Guide › Install"), code fences kept whole
_ATX = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _markdown(text: str) -> list[Section]:
    sections, path, lines, fenced = [], [], [], False

    def close():
        body = "\n".join(lines).strip()
        if body:
            sections.append(Section(" › ".join(h for _, h in path), body))
        lines.clear()

    for line in text.split("\n"):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        match = None if fenced else _ATX.match(line)
        if match:
            close()
            level = len(match.group(1))
            path[:] = [(lv, h) for lv, h in path if lv < level] + [(level, match.group(2))]
        else:
            lines.append(line)
    close()
    return sections


# --- HTML: visible text only (no script, style, template...), sections at h1-h6, paragraphs at block elements
_SKIP = {"script", "style", "noscript", "template", "svg", "iframe", "object", "head"}
_BLOCK = {"p", "div", "li", "tr", "br", "section", "article", "header", "footer", "blockquote", "pre", "table", "ul",
          "ol", "dl", "dt", "dd", "hr", "main", "nav", "aside", "figure", "figcaption", "form", "title"}


class _HTMLText(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.sections: list[Section] = []
        self.heading, self.parts, self.skipping, self.in_heading, self.heading_parts = "", [], 0, 0, []

    def handle_starttag(self, tag, attrs):
        if tag in _SKIP:
            self.skipping += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self._close()
            self.in_heading, self.heading_parts = 1, []
        elif tag in _BLOCK:
            self.parts.append("\n\n")

    def handle_startendtag(self, tag, attrs):
        if tag in _BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in _SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif re.fullmatch(r"h[1-6]", tag) and self.in_heading:
            self.in_heading = 0
            self.heading = " ".join("".join(self.heading_parts).split())
        elif tag in _BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data):
        if self.skipping:
            return
        (self.heading_parts if self.in_heading else self.parts).append(data)

    def _close(self):
        body = "".join(self.parts)
        paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", body)]
        body = "\n\n".join(p for p in paragraphs if p)
        if body:
            self.sections.append(Section(self.heading, body))
        self.parts = []

    def result(self) -> list[Section]:
        self._close()
        return self.sections


def _html(text: str) -> list[Section]:
    parser = _HTMLText()
    parser.feed(text)
    parser.close()
    return parser.result()


# --- PDF: the text of each page (pypdf), a section per page
def _pdf(data: bytes) -> Document:
    from pypdf import PdfReader  # only the indexing worker reads PDFs: pypdf stays out of the web process's imports
    from pypdf.errors import PdfReadError, PdfStreamError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                opened = reader.decrypt("")  # an owner password alone (no password to open it) still reads
            except Exception:
                opened = 0
            if not opened:
                raise ExtractionError("This PDF is encrypted: upload a copy without a password.")
        pages = [page.extract_text() or "" for page in reader.pages]
    except ExtractionError:
        raise
    except (PdfReadError, PdfStreamError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError,
            RecursionError, AssertionError, ZeroDivisionError):
        raise ExtractionError("This PDF is damaged and cannot be read: export it again, or upload its text.") from None
    if not pages:
        raise ExtractionError("This PDF has no pages.")
    sections = [Section(f"Page {i}", text.strip()) for i, text in enumerate(pages, 1) if text.strip()]
    if not sections:
        raise ExtractionError("This PDF has no text (its pages may be scanned images): upload a PDF with text, "
                              "or its text as a file.")
    return Document(PDF, sections, pages=len(pages))

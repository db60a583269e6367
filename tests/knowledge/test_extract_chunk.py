"""Extraction by content (not name) and chunking by tokens: pure functions on real files and the real tokenizer."""

from __future__ import annotations

import io

import pytest
from tokenizers import Tokenizer

from apps.knowledge.chunking import chunk_sections
from apps.knowledge.extract import HTML, MARKDOWN, PDF, TEXT, ExtractionError, Section, detect, extract
from tests.knowledge.conftest import GUIDE


@pytest.fixture(scope="module")
def tokenizer(tiny_hf_dir):
    return Tokenizer.from_file(str(tiny_hf_dir / "tokenizer.json"))


def pdf_bytes(pages: list[str], *, password: str | None = None) -> bytes:
    """A real PDF written with pypdf: one page per text (empty text: a page with no text, as a scan has)."""
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    for text in pages:
        page = writer.add_blank_page(612, 792)
        if text:
            font = DictionaryObject({NameObject("/Type"): NameObject("/Font"), NameObject("/Subtype"): NameObject("/Type1"),
                                     NameObject("/BaseFont"): NameObject("/Helvetica")})
            page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): DictionaryObject(
                {NameObject("/F1"): writer._add_object(font)})})
            stream = DecodedStreamObject()
            stream.set_data(f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode())
            page[NameObject("/Contents")] = writer._add_object(stream)
    if password:
        writer.encrypt(user_password=password, owner_password=password, algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_the_type_comes_from_the_content_not_the_name():
    assert detect(GUIDE.encode()) == MARKDOWN
    assert detect(b"Just a few plain lines.\n\nNothing more.") == TEXT
    assert detect(b"<!DOCTYPE html><html><body><p>Hi</p></body></html>") == HTML
    assert detect(pdf_bytes(["Hello"])) == PDF
    with pytest.raises(ExtractionError, match="PNG image"):
        detect(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # whatever it is named (notes.md)
    with pytest.raises(ExtractionError, match="binary"):
        detect(b"abc\x00def")
    with pytest.raises(ExtractionError, match="UTF-8"):
        detect("café".encode("latin-1"))


def test_markdown_sections_keep_their_heading_path():
    doc = extract(GUIDE.encode())
    headings = [s.heading for s in doc.sections]
    assert headings == ["Zephyr X200 guide", "Zephyr X200 guide › Warranty", "Zephyr X200 guide › Battery",
                        "Zephyr X200 guide › 中文说明"]
    assert "27 months" in doc.sections[1].text


def test_html_keeps_visible_text_only():
    html = b"""<html><head><title>T</title><style>p{color:red}</style><script>alert('secret script')</script></head>
    <body><h1>Returns</h1><p>Send it back within <b>30 days</b>.</p><noscript>enable js</noscript>
    <h2>Fees</h2><p>Returns are free &amp; fast.</p></body></html>"""
    doc = extract(html)
    assert doc.content_type == HTML
    assert [(s.heading, s.text) for s in doc.sections] == [("Returns", "Send it back within 30 days."),
                                                           ("Fees", "Returns are free & fast.")]
    assert "alert" not in doc.text and "color" not in doc.text and "enable js" not in doc.text


def test_pdf_text_per_page_and_clear_messages_for_bad_ones():
    doc = extract(pdf_bytes(["The lighthouse opens at nine.", "", "Tickets cost four euros."]))
    assert doc.content_type == PDF and doc.pages == 3
    assert [s.heading for s in doc.sections] == ["Page 1", "Page 3"]
    assert "lighthouse opens at nine" in doc.sections[0].text
    with pytest.raises(ExtractionError, match="encrypted"):
        extract(pdf_bytes(["Locked text"], password="hunter2"))
    with pytest.raises(ExtractionError, match="no text"):
        extract(pdf_bytes(["", ""]))
    with pytest.raises(ExtractionError, match="damaged"):
        extract(b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 9 0 R >>\ngarbage\n%%EOF")


def test_chunks_fit_the_size_overlap_and_never_cross_a_heading(tokenizer):
    paragraphs = [" ".join(f"Sentence {p}.{i} tells about item {p * 10 + i}." for i in range(6)) for p in range(12)]
    sections = [Section("First", "\n\n".join(paragraphs[:7])), Section("Second", "\n\n".join(paragraphs[7:]))]
    passages = chunk_sections(sections, tokenizer=tokenizer, size=80, overlap=20)
    assert len(passages) > 4
    for p in passages:
        assert p.token_count == len(tokenizer.encode(p.text, add_special_tokens=False).ids) or p.token_count <= 80
        assert p.token_count <= 80
        assert p.heading in ("First", "Second")
    text = "\n\n".join(s.text for s in sections)
    for p in passages:  # the offsets point at the passage in the document's text
        assert text[p.start:p.end].strip() == p.text
    first = [p for p in passages if p.heading == "First"]
    for a, b in zip(first, first[1:]):
        assert b.start < a.end, "consecutive passages of a section overlap"
        assert a.end - b.start < len(a.text)
    assert not any("Sentence 7.0" in p.text and p.heading == "First" for p in passages)
    # One sentence longer than a passage is cut between tokens.
    long = chunk_sections([Section("", "word " * 500)], tokenizer=tokenizer, size=64, overlap=0)
    assert len(long) >= 7 and all(p.token_count <= 64 for p in long)

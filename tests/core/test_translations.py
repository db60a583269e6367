"""The Simplified Chinese interface is complete, and the committed .mo matches the .po it was compiled from."""

import ast
import gettext
import re
from pathlib import Path

LOCALE = Path(__file__).resolve().parents[2] / "locale" / "zh_Hans" / "LC_MESSAGES"


def po_entries(path: Path) -> dict[str, str]:
    """msgid → msgstr (msgstr[0] for plural entries) of a .po file; the header entry is left out."""
    entries, key, current, field = {}, None, {}, None
    for line in path.read_text(encoding="utf-8").splitlines() + [""]:
        if not line.strip() or line.startswith("#"):
            if "msgid" in current:
                entries[current["msgid"]] = current.get("msgstr", current.get("msgstr[0]", ""))
            current, field = ({}, None) if not line.strip() else (current, field)
            continue
        match = re.match(r'^(msgid|msgid_plural|msgstr(?:\[\d\])?|msgctxt) (".*")$', line)
        if match:
            field, key = match.group(1), ast.literal_eval(match.group(2))
            current[field] = key
        elif line.startswith('"') and field:
            current[field] += ast.literal_eval(line)
    entries.pop("", None)
    return entries


def test_every_message_is_translated():
    entries = po_entries(LOCALE / "django.po")
    assert len(entries) > 200
    missing = [msgid for msgid, msgstr in entries.items() if not msgstr]
    assert missing == []
    assert "#, fuzzy" not in (LOCALE / "django.po").read_text(encoding="utf-8")


def test_compiled_catalog_matches_the_po_file():
    with open(LOCALE / "django.mo", "rb") as fh:
        catalog = gettext.GNUTranslations(fh)
    for msgid, msgstr in po_entries(LOCALE / "django.po").items():
        assert catalog.gettext(msgid) == msgstr, f"django.mo is stale for {msgid!r}: run `make messages`"


def test_placeholders_survive_translation():
    for msgid, msgstr in po_entries(LOCALE / "django.po").items():
        for pattern in (r"%\(\w+\)s", r"\{\{ ?\w+ ?\}\}"):
            assert sorted(re.findall(pattern, msgid)) == sorted(re.findall(pattern, msgstr)), msgid

"""The Simplified Chinese interface is complete, and the committed .mo matches the .po it was compiled from.

Two catalogs: `django` (Python code and templates) and `djangojs` (static/js, served to the scripts by /jsi18n/)."""

import ast
import gettext
import re
from pathlib import Path

import pytest

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


DOMAINS = pytest.mark.parametrize("domain, at_least", [("django", 200), ("djangojs", 15)])


@DOMAINS
def test_every_message_is_translated(domain, at_least):
    entries = po_entries(LOCALE / f"{domain}.po")
    assert len(entries) > at_least
    missing = [msgid for msgid, msgstr in entries.items() if not msgstr]
    assert missing == []
    assert "#, fuzzy" not in (LOCALE / f"{domain}.po").read_text(encoding="utf-8")


@DOMAINS
def test_compiled_catalog_matches_the_po_file(domain, at_least):
    with open(LOCALE / f"{domain}.mo", "rb") as fh:
        catalog = gettext.GNUTranslations(fh)
    for msgid, msgstr in po_entries(LOCALE / f"{domain}.po").items():
        assert catalog.gettext(msgid) == msgstr, f"{domain}.mo is stale for {msgid!r}: run `make messages`"


@DOMAINS
def test_placeholders_survive_translation(domain, at_least):
    for msgid, msgstr in po_entries(LOCALE / f"{domain}.po").items():
        for pattern in (r"%\(\w+\)s", r"\{\{ ?\w+ ?\}\}"):
            assert sorted(re.findall(pattern, msgid)) == sorted(re.findall(pattern, msgstr)), msgid


@pytest.mark.django_db
def test_scripts_get_their_words_in_the_page_s_language(client):
    """Every page loads the JavaScript catalog before its scripts; it answers in the visitor's language."""
    html = client.get("/").content.decode()
    assert html.index('src="/jsi18n/"') < html.index("</head>")
    assert "\\u590d\\u5236" not in client.get("/jsi18n/").content.decode()  # English: no catalog to speak of
    chinese = client.get("/jsi18n/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert '"Copy": "\\u590d\\u5236"' in chinese and "globals.gettext = django.gettext" in chinese  # 复制


def test_the_catalog_holds_every_string_of_the_code(tmp_path):
    """makemessages on a copy of the code finds no string that locale/zh_Hans lacks (needs GNU gettext)."""
    import shutil
    import subprocess
    import sys

    from tests.conftest import require

    require(shutil.which("xgettext") is not None, "GNU gettext is not installed (apt-get install gettext)")
    root = LOCALE.parents[2]
    copy = tmp_path / "copy"
    for name in ["apps", "templates", "store", "static", "manage.py", "locale"]:
        (shutil.copytree if (root / name).is_dir() else shutil.copy)(root / name, copy / name)
    for domain in ["django", "djangojs"]:
        subprocess.run([sys.executable, "manage.py", "makemessages", "-d", domain, "-l", "zh_Hans", "--no-obsolete",
                        "--ignore=static/vendor"], cwd=copy, check=True, capture_output=True,
                       env={**__import__("os").environ, "DJANGO_SETTINGS_MODULE": "store.settings",
                            "STORE_DATA_DIR": str(tmp_path / "data")})
        fresh = po_entries(copy / "locale" / "zh_Hans" / "LC_MESSAGES" / f"{domain}.po")
        missing = [msgid for msgid, msgstr in fresh.items() if not msgstr]
        assert missing == [], f"untranslated strings in the {domain} catalog: run `make messages` and translate {missing[:5]}"

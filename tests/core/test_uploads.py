"""Request bodies capped before they are read (issue 11, finding 16): an upload over the cap gets a 413 on every
face, and nothing of it is written (no temporary file, no row, no stored file)."""

import http.client
import json
import os
from urllib.parse import urlsplit

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.accounts.services import api_key_create
from apps.catalog.models import StoreApp
from apps.tuning.models import TrainingFile
from tests.catalog.test_avatars import form, image_bytes
from tests.live import store_server

CAP = 50_000


@pytest.fixture
def nowhere_to_spill(settings, tmp_path):
    """Uploads over 1 KB would spill to a folder that does not exist: a request whose upload Django reads fails
    there (as root, a read-only folder would not stop it), so a 413 proves that nothing was read."""
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1024
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "no-such-folder")
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.UPLOAD_REQUEST_MAX_BYTES = CAP
    settings.REQUEST_BODY_MAX_BYTES = CAP
    return settings.MEDIA_ROOT


def assert_nothing_written(media):
    assert not TrainingFile.objects.exists()
    assert not media.exists() or not any(p.is_file() for p in media.rglob("*"))


@pytest.mark.django_db
def test_an_upload_over_the_cap_is_refused_before_it_is_read_on_every_face(client, user, nowhere_to_spill):
    big = SimpleUploadedFile("big.jsonl", b"x" * (CAP + 1))
    key = {"HTTP_AUTHORIZATION": f"Bearer {api_key_create(user=user, name='x')[1]}"}
    for url in ("/v1/files", "/api/v1/files/"):
        big.seek(0)
        response = client.post(url, {"file": big, "purpose": "fine-tune"}, **key)
        assert response.status_code == 413, url
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["code"] == "file_too_large" and error["param"] == "file" and error["type"] == "invalid_request_error"
        assert error["message"].startswith("The upload is ") and f"uploads here may have {CAP:,} bytes at most" in error["message"]

    client.force_login(user)
    big.seek(0)
    page = client.post("/customize/", {"file": big}, HTTP_REFERER="http://testserver/customize/")
    assert page.status_code == 413 and page["Content-Type"].startswith("text/html")
    html = page.content.decode()
    assert "That upload is too large" in html and "This upload is too large" in html and "48.8\xa0KB" in html
    assert 'href="http://testserver/customize/"' in html  # back to the form
    assert_nothing_written(nowhere_to_spill)


@pytest.mark.django_db
def test_the_builder_s_avatar_upload_has_the_same_cap(client, store, user, nowhere_to_spill, settings):
    client.force_login(user)
    response = client.post("/build/new/", form(avatar=SimpleUploadedFile("me.png", image_bytes() + b"\0" * CAP)))
    assert response.status_code == 413 and "This upload is too large" in response.content.decode()
    assert not StoreApp.objects.filter(name="Avatar App").exists()
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = CAP  # under the cap, the avatar is read as always
    assert client.post("/build/new/", form(avatar=SimpleUploadedFile("me.png", image_bytes()))).status_code == 302  # under it


def post_raw(url: str, path: str, headers: dict, chunks=()) -> tuple[int, dict]:
    """POST the headers, then the chunks (Transfer-Encoding: chunked) if any; the status and JSON body."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.putrequest("POST", path)
    for name, value in headers.items():
        conn.putheader(name, value)
    conn.endheaders()
    for chunk in chunks:
        conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    if chunks:
        conn.send(b"0\r\n\r\n")
    response = conn.getresponse()  # a socket timeout here: the server waited for a body it should refuse unread
    try:
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_the_live_store_refuses_an_oversized_body_before_reading_it(transactional_db, user, tmp_path, settings):
    """Through uvicorn: Django's ASGI handler would spool the whole body to a temporary file before any middleware."""
    settings.MEDIA_ROOT = tmp_path / "media"
    key = api_key_create(user=user, name="x")[1]
    spill = tmp_path / "server-tmp"
    spill.mkdir()
    with store_server(log_path=tmp_path / "store.log", TRAINING_FILE_MAX_BYTES=str(CAP), TMPDIR=str(spill)) as url:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "multipart/form-data; boundary=x"}
        # Declared: 100 MB that the client never sends. A server that read bodies first would wait for them.
        status, body = post_raw(url, "/v1/files", {**headers, "Content-Length": str(100 * 2**20)})
        assert status == 413 and body["error"]["code"] == "file_too_large"
        assert body["error"]["message"].startswith("The upload is 104,857,600 bytes")
        # No length (chunked) and 3 MB sent: cut at the cap (the file's limit and 1 MB for the form around it).
        status, body = post_raw(url, "/v1/files", {**headers, "Transfer-Encoding": "chunked"}, chunks=[b"x" * 2**18] * 12)
        assert status == 413 and body["error"]["message"].startswith(f"The upload is larger than {CAP + 2**20:,} bytes")
        status, body = post_raw(url, "/v1/chat/completions", {"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                                                              "Content-Length": str(64 * 2**20)})
        assert status == 413 and body["error"]["code"] == "request_too_large"
        assert os.listdir(spill) == []
    assert not TrainingFile.objects.exists()

"""Model downloads (issue 11, finding 9): a zip streamed as it is written, no temporary copy, bounded memory.

The attack: ask for a model's zip, anonymously, again and again (or slowly, or half-way): today each request
wrote the whole archive to the temp folder first, and an error left it there.
"""

import asyncio
import hashlib
import io
import os
import zipfile

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient

from apps.registry.downloads import CHUNK_BYTES, _pulled_in_threads
from apps.registry.models import RegisteredModel
from apps.registry.services import model_version_register
from tests.registry.test_services import make_source

pytestmark = pytest.mark.django_db

BIG = 5 * CHUNK_BYTES + 12345  # weights over several chunks


@pytest.fixture
def public_version(tmp_path, user):
    source = make_source(tmp_path, payload=os.urandom(BIG))
    (source / "nested").mkdir()
    (source / "nested" / "extra.txt").write_text("a file in a sub-folder")
    return model_version_register(name="public-demo", source_dir=source, owner=user,
                                  visibility=RegisteredModel.Visibility.PUBLIC)


def sha256sums(data: bytes) -> dict[str, str]:
    return {name: digest for digest, name in (line.split("  ", 1) for line in data.decode().splitlines())}


def check_round_trip(data: bytes, version) -> zipfile.ZipFile:
    """The zip opens, each file's sha256 matches the version's SHA256SUMS, and it holds nothing else."""
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.testzip() is None
    sums = sha256sums(archive.read("SHA256SUMS"))
    assert sums == version.checksums
    assert sorted(archive.namelist()) == sorted([*sums, "SHA256SUMS"])
    for name, digest in sums.items():
        assert hashlib.sha256(archive.read(name)).hexdigest() == digest, name
    return archive


def test_anonymous_download_streams_a_zip_that_matches_the_checksums_with_no_temp_file(client, public_version,
                                                                                        empty_tempdir):
    response = client.get("/models/public-demo/v1/download")
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"] == 'attachment; filename="public-demo-v1.zip"'
    assert not response.has_header("Content-Length")  # written as it goes
    chunks = []
    for chunk in response.streaming_content:
        chunks.append(chunk)
        assert list(empty_tempdir.iterdir()) == []  # during the download
        assert len(chunk) <= CHUNK_BYTES + 64 * 1024  # memory: one chunk at a time, never the archive
    assert len(chunks) > 5
    archive = check_round_trip(b"".join(chunks), public_version)
    assert archive.getinfo("model.safetensors").compress_type == zipfile.ZIP_STORED  # weights do not compress
    assert archive.getinfo("nested/extra.txt").external_attr >> 16 == 0o100644  # not read-only once unpacked
    assert list(empty_tempdir.iterdir()) == []  # and after


def test_the_base_model_zip_round_trips(client, tiny_version, empty_tempdir):
    response = client.get("/models/smollm2-135m-instruct/v1/download")
    check_round_trip(b"".join(response.streaming_content), tiny_version)
    assert list(empty_tempdir.iterdir()) == []


def test_a_download_stopped_half_way_closes_its_files(client, public_version, empty_tempdir):
    def open_files():
        return {os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                if os.path.exists(f"/proc/self/fd/{fd}")}

    before = open_files()
    response = client.get("/models/public-demo/v1/download")
    next(iter(response.streaming_content))
    assert any(f.startswith(str(public_version.path)) for f in open_files() - before)  # being read
    response.close()  # the client went away
    assert not any(str(public_version.path) in f for f in open_files() - before)
    assert list(empty_tempdir.iterdir()) == []


def test_under_asgi_the_zip_streams_one_chunk_at_a_time(public_version, empty_tempdir):
    """Django reads a sync iterator to its end under ASGI (the archive in memory): the view hands it an async
    one, whose next chunk is made only once the previous one went out."""

    async def download():
        response = await AsyncClient().get("/models/public-demo/v1/download")
        assert response.status_code == 200 and response.is_async
        return b"".join([chunk async for chunk in response.streaming_content])

    check_round_trip(async_to_sync(download)(), public_version)
    assert list(empty_tempdir.iterdir()) == []


def test_the_async_side_makes_no_chunk_ahead_and_closes_the_source_when_the_client_leaves():
    made, closed = [], []

    def chunks():
        try:
            for n in range(100):
                made.append(n)
                yield b"x" * 10
        finally:
            closed.append(True)

    async def take_two_then_leave():
        stream = _pulled_in_threads(chunks())
        assert await anext(stream) == b"x" * 10
        await asyncio.sleep(0.05)  # a slow client: the producer must wait for it
        assert made == [0]
        await anext(stream)
        await stream.aclose()  # what Django does when the client disconnects

    asyncio.run(take_two_then_leave())
    assert made == [0, 1] and closed == [True]


def test_a_version_with_a_missing_file_gets_a_readable_error_not_a_broken_zip(client, public_version, empty_tempdir):
    (public_version.path / "tokenizer.json").unlink()
    response = client.get("/models/public-demo/v1/download", follow=True)
    assert response.redirect_chain[-1][0] == "/models/public-demo/v1/"
    assert "not all on the server right now" in response.content.decode()
    assert list(empty_tempdir.iterdir()) == []


def test_a_private_model_downloads_for_its_owner_only(client, user, other_user, tmp_path):
    model_version_register(name="ft:demo:secret", source_dir=make_source(tmp_path), owner=user)
    url = "/models/ft:demo:secret/v1/download"
    assert client.get(url).status_code == 404
    client.force_login(other_user)
    assert client.get(url).status_code == 404
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 200
    assert 'filename="ft_demo_secret-v1.zip"' in response["Content-Disposition"]

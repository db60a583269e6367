"""Merged weights of an adapter (issue 11, finding 9): built once, by a task, cached beside the version.

The attack: ask for `?merged=1` of a public adapter, anonymously, many times at once. Today each request ran a
PEFT merge in the web process and wrote a zip to the temp folder. Now: one build is enqueued whatever the
number of requests, the answer is an immediate 202, and once built every request streams the cached folder.
The real merge (a child process over the tiny model) runs in tests/registry/test_views.py.
"""

import json
import os
import subprocess
import sys
import threading
from datetime import timedelta

import pytest
from celery import current_app
from django.db import connections
from django.test import Client
from django.utils import timezone

from apps.registry import merged as merged_module
from apps.registry.models import MergedWeights, RegisteredModel
from apps.registry.services import model_version_register
from apps.registry.tasks import merged_weights_build
from tests.live import ROOT
from tests.registry.test_downloads import check_round_trip
from tests.registry.test_services import make_source

URL = "/models/ft:demo:adapter/v1/download?merged=1"


@pytest.fixture
def sent(monkeypatch):
    """The tasks sent to the broker (name, args), instead of sending them."""
    calls = []
    lock = threading.Lock()

    def send_task(name, args):
        with lock:
            calls.append((name, args))

    monkeypatch.setattr(current_app, "send_task", send_task)
    return calls


@pytest.fixture
def adapter(db, tmp_path, user):
    """A public LoRA version (layout only: no merge really runs in this file) on a public base."""
    base = model_version_register(name="demo-base", source_dir=make_source(tmp_path, name="base"),
                                  visibility=RegisteredModel.Visibility.PUBLIC)
    source = tmp_path / "adapter"
    source.mkdir()
    (source / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": "demo-base"}))
    (source / "adapter_model.safetensors").write_bytes(b"adapter weights")
    return model_version_register(name="ft:demo:adapter", source_dir=source, kind="lora", owner=user,
                                  base_version=base, visibility=RegisteredModel.Visibility.PUBLIC)


@pytest.fixture
def merges(monkeypatch):
    """The child's merge, faked: writes a small full-weights folder (and counts the merges)."""
    calls = []

    def fake_merge(base, adapter, out):
        calls.append((base, adapter))
        out.mkdir()
        (out / "config.json").write_text(json.dumps({"model_type": "llama"}))
        (out / "model.safetensors").write_bytes(b"merged weights" * 1000)

    monkeypatch.setattr(merged_module, "merge_in_child", fake_merge)
    return calls


def leftovers(version) -> list[str]:
    """What the model's folder holds besides the version's own folder and a ready merged folder."""
    model_dir = version.path.parent
    return sorted(p.name for p in model_dir.iterdir() if p.name not in {str(version.number), "merged"}) + sorted(
        f"merged/{p.name}" for p in (model_dir / "merged").glob("*") if p.name != str(version.number)
    )


@pytest.mark.django_db
def test_anonymous_asks_enqueue_one_build_then_every_download_streams_the_cached_folder(
    client, adapter, sent, merges, empty_tempdir, django_capture_on_commit_callbacks
):
    for _ in range(3):
        with django_capture_on_commit_callbacks(execute=True):
            response = client.get(URL)
        assert response.status_code == 202
        assert "Merged weights are being prepared, try again in a minute" in response.content.decode()
    assert sent == [("apps.registry.tasks.merged_weights_build", [MergedWeights.objects.get().pk])]
    assert "Merged weights are being prepared" in client.get("/models/ft:demo:adapter/v1/").content.decode()

    merged_weights_build(*sent[0][1])  # the worker
    row = MergedWeights.objects.get()
    assert row.status == "ready" and row.size_bytes > 0 and set(row.checksums) == {"config.json", "model.safetensors",
                                                                                  "README.md"}
    for _ in range(2):
        response = client.get(URL)
        assert response.status_code == 200
        assert 'filename="ft_demo_adapter-v1-merged.zip"' in response["Content-Disposition"]
        check_round_trip(b"".join(response.streaming_content), row)
    assert len(merges) == 1 and len(sent) == 1
    merged_weights_build(row.pk)  # a duplicate delivery of the message builds nothing
    assert len(merges) == 1
    adapter.refresh_from_db()
    assert leftovers(adapter) == [] and list(empty_tempdir.iterdir()) == []
    assert (adapter.path.parent / "merged" / "1" / "SHA256SUMS").is_file()
    assert "Merged weights: ready" in client.get("/models/ft:demo:adapter/v1/").content.decode()


@pytest.mark.django_db(transaction=True)
def test_sixteen_concurrent_asks_enqueue_one_build(adapter, sent):
    start = threading.Barrier(16)

    def ask(_):
        try:
            start.wait()
            return Client().get(URL).status_code
        finally:
            connections.close_all()

    threads = []
    statuses = []
    for n in range(16):
        thread = threading.Thread(target=lambda n=n: statuses.append(ask(n)))
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    assert statuses == [202] * 16
    assert len(sent) == 1 and MergedWeights.objects.count() == 1


@pytest.mark.django_db
def test_a_failed_build_leaves_nothing_behind_and_is_tried_again_later_not_at_every_click(
    client, adapter, sent, monkeypatch, empty_tempdir, django_capture_on_commit_callbacks
):
    def broken_merge(base, adapter_path, out):
        out.mkdir()
        (out / "model.safetensors").write_bytes(b"half written")
        raise merged_module.MergeFailed("the merge exited with status -9: Killed (/secret/path)")

    monkeypatch.setattr(merged_module, "merge_in_child", broken_merge)
    with django_capture_on_commit_callbacks(execute=True):
        client.get(URL)
    merged_weights_build(*sent[0][1])
    row = MergedWeights.objects.get()
    assert row.status == "failed" and "status -9" in row.error  # for staff, in the admin
    assert leftovers(adapter) == [] and not (adapter.path.parent / "merged").exists()
    assert list(empty_tempdir.iterdir()) == []

    with django_capture_on_commit_callbacks(execute=True):
        response = client.get(URL)
    assert response.status_code == 503 and response["Retry-After"] == "600"
    page = response.content.decode()
    assert "Preparing the merged weights failed" in page and "/secret/path" not in page
    assert len(sent) == 1  # not built again at every click

    MergedWeights.objects.update(finished_at=timezone.now() - timedelta(minutes=11))
    with django_capture_on_commit_callbacks(execute=True):
        assert client.get(URL).status_code == 202
        assert client.get(URL).status_code == 202
    assert len(sent) == 2 and MergedWeights.objects.get().status == "building"


@pytest.mark.django_db
@pytest.mark.parametrize("lost", ["message lost in the queue", "worker died while building"])
def test_a_lost_build_is_asked_for_again_once(client, adapter, sent, lost, django_capture_on_commit_callbacks):
    now = timezone.now()
    if lost == "message lost in the queue":
        MergedWeights.objects.create(version=adapter, requested_at=now - timedelta(minutes=16))
    else:
        MergedWeights.objects.create(version=adapter, requested_at=now - timedelta(hours=1),
                                     started_at=now - timedelta(minutes=36))
    with django_capture_on_commit_callbacks(execute=True):
        assert client.get(URL).status_code == 202
        assert client.get(URL).status_code == 202
    assert len(sent) == 1
    assert MergedWeights.objects.get().started_at is None  # free for the next worker to take


@pytest.mark.django_db
def test_a_build_still_under_way_is_not_asked_for_again(client, adapter, sent, django_capture_on_commit_callbacks):
    now = timezone.now()
    MergedWeights.objects.create(version=adapter, requested_at=now - timedelta(minutes=20),
                                 started_at=now - timedelta(minutes=5))
    with django_capture_on_commit_callbacks(execute=True):
        assert client.get(URL).status_code == 202
    assert sent == []


@pytest.mark.django_db
def test_ready_weights_whose_folder_went_missing_are_built_again(client, adapter, sent, merges,
                                                                django_capture_on_commit_callbacks):
    import shutil

    with django_capture_on_commit_callbacks(execute=True):
        client.get(URL)
    merged_weights_build(*sent[0][1])
    shutil.rmtree(adapter.path.parent / "merged")
    with django_capture_on_commit_callbacks(execute=True):
        assert client.get(URL).status_code == 202
    merged_weights_build(*sent[1][1])
    assert client.get(URL).status_code == 200 and len(merges) == 2


@pytest.mark.django_db
def test_a_build_presumed_dead_does_not_replace_the_newer_one(adapter, sent, monkeypatch):
    """Its worker was only slow: the row was asked for again meanwhile, so its result is dropped."""
    row = MergedWeights.objects.create(version=adapter, requested_at=timezone.now())

    def slow_merge(base, adapter_path, out):
        out.mkdir()
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"late")
        MergedWeights.objects.filter(pk=row.pk).update(requested_at=timezone.now(), started_at=None)  # asked again

    monkeypatch.setattr(merged_module, "merge_in_child", slow_merge)
    merged_weights_build(row.pk)
    row.refresh_from_db()
    assert row.status == "building" and row.started_at is None
    assert leftovers(adapter) == [] and not (adapter.path.parent / "merged" / "1").exists()


@pytest.mark.django_db
def test_only_an_adapter_has_merged_weights(client, adapter, sent):
    response = client.get("/models/demo-base/v1/download?merged=1", follow=True)
    assert "Only a LoRA adapter has merged weights" in response.content.decode()
    assert sent == [] and MergedWeights.objects.count() == 0


def test_a_merge_that_fails_in_the_child_says_why(tmp_path):
    """The real child process, on folders that hold no model: a MergeFailed with its error, no folder written."""
    with pytest.raises(merged_module.MergeFailed, match="exited with status"):
        merged_module.merge_in_child(tmp_path / "no-base", tmp_path / "no-adapter", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_web_side_of_downloads_never_loads_torch():
    """The views, the request service and the task module import no torch, transformers or peft: only the
    child process does (tests/test_layers.py keeps the module graph honest)."""
    code = (
        "import sys, django; django.setup()\n"
        "import apps.registry.views, apps.registry.merged, apps.registry.downloads, apps.registry.tasks\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120,
                   env={**os.environ, "DJANGO_SETTINGS_MODULE": "store.settings_test"})

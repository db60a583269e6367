import json
import os
from pathlib import Path

import pytest

from apps.core.errors import Conflict, InvalidRequest, NotFound
from apps.registry import artifacts
from apps.registry.models import ModelAlias, ModelAliasMove, ModelVersion, RegisteredModel
from apps.registry.references import parse_reference
from apps.registry.selectors import model_version_path, model_version_resolve
from apps.registry.services import (
    ChecksumMismatch,
    model_alias_move,
    model_version_register,
    model_version_verify,
    registered_model_delete,
    staging_cleanup,
)

pytestmark = pytest.mark.django_db


def make_source(tmp_path: Path, payload: bytes = b"weights", name: str = "src") -> Path:
    """A minimal full-weights folder: enough for the layout check, no model needed."""
    src = tmp_path / name
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (src / "model.safetensors").write_bytes(payload)
    (src / "tokenizer.json").write_text("{}")
    return src


def test_register_creates_ready_version_with_checksums_card_and_latest(tmp_path, registry_root):
    version = model_version_register(
        name="demo", source_dir=make_source(tmp_path), metrics={"loss": 1.5}, base_model_card_id="upstream/demo"
    )
    assert version.number == 1 and version.status == ModelVersion.Status.READY
    folder = registry_root / "demo" / "1"
    assert version.path == folder and folder.is_dir()
    assert set(version.checksums) == {"config.json", "model.safetensors", "tokenizer.json", "README.md", "metrics.json"}
    assert version.checksums["model.safetensors"] == artifacts.sha256_file(folder / "model.safetensors")
    assert (folder / "SHA256SUMS").read_text().count("\n") == 5
    assert json.loads((folder / "metrics.json").read_text()) == {"loss": 1.5}
    header, body = artifacts.read_model_card(folder)
    assert header["base_model"] == "upstream/demo"
    assert header["library_name"] == "transformers" and header["pipeline_tag"] == "text-generation"
    assert "# demo" in body
    assert ModelAlias.objects.get(registered_model__name="demo", name="latest").version == version
    assert oct((folder / "model.safetensors").stat().st_mode & 0o777) == "0o444"
    # The source folder is copied, not taken over.
    assert (tmp_path / "src" / "model.safetensors").exists()


def test_second_registration_is_version_two_and_moves_latest_with_history(tmp_path, user):
    v1 = model_version_register(name="demo", source_dir=make_source(tmp_path, b"one", "a"))
    v2 = model_version_register(name="demo", source_dir=make_source(tmp_path, b"two", "b"), created_by=user)
    assert (v1.number, v2.number) == (1, 2)
    assert model_version_resolve(reference="demo", user=None).pk == v2.pk
    moves = list(ModelAliasMove.objects.filter(alias="latest").order_by("moved_at", "id"))
    assert [(m.from_version_id, m.to_version_id) for m in moves] == [(None, v1.pk), (v1.pk, v2.pk)]
    assert moves[1].moved_by == user


def test_alias_move_records_history_and_is_a_no_op_when_unchanged(tmp_path, user):
    v1 = model_version_register(name="demo", source_dir=make_source(tmp_path, b"one", "a"))
    v2 = model_version_register(name="demo", source_dir=make_source(tmp_path, b"two", "b"))
    model_alias_move(version=v1, alias="stable", moved_by=user)
    model_alias_move(version=v1, alias="stable", moved_by=user)  # unchanged: no new history row
    model_alias_move(version=v2, alias="stable", moved_by=user)
    history = ModelAliasMove.objects.filter(alias="stable").order_by("moved_at", "id")
    assert [(h.from_version_id, h.to_version_id, h.moved_by_id) for h in history] == [
        (None, v1.pk, user.pk),
        (v1.pk, v2.pk, user.pk),
    ]
    assert model_version_resolve(reference="demo@stable", user=None).pk == v2.pk
    assert model_version_resolve(reference="demo@v1", user=None).pk == v1.pk


@pytest.mark.parametrize(
    "text, expected",
    [
        ("demo", ("demo", "latest", None)),
        ("demo@stable", ("demo", "stable", None)),
        ("demo@v12", ("demo", None, 12)),
        ("ft:smollm2-135m-instruct:alice::ftjob-abc@v1", ("ft:smollm2-135m-instruct:alice::ftjob-abc", None, 1)),
    ],
)
def test_parse_reference(text, expected):
    ref = parse_reference(text)
    assert (ref.model_id, ref.alias, ref.number) == expected


@pytest.mark.parametrize("text", ["", "@v1", "demo@", "demo@v1@v2", "demo@Bad Alias"])
def test_parse_reference_rejects_malformed(text):
    with pytest.raises(InvalidRequest):
        parse_reference(text)


def test_resolve_gives_the_loadable_folder_and_not_found_for_unknown(tmp_path):
    version = model_version_register(name="demo", source_dir=make_source(tmp_path))
    assert model_version_path(reference="demo@v1", user=None) == version.path
    for missing in ["nope", "demo@v2", "demo@stable"]:
        with pytest.raises(NotFound):
            model_version_resolve(reference=missing, user=None)


def test_private_model_resolves_for_its_owner_only(tmp_path, user, other_user):
    model_version_register(name="mine", source_dir=make_source(tmp_path), owner=user)
    assert RegisteredModel.objects.get(name="mine").visibility == RegisteredModel.Visibility.PRIVATE
    assert model_version_resolve(reference="mine", user=user).registered_model.owner == user
    with pytest.raises(NotFound):
        model_version_resolve(reference="mine", user=other_user)
    with pytest.raises(NotFound):
        model_version_resolve(reference="mine", user=None)


def test_a_model_id_belongs_to_its_first_owner(tmp_path, user, other_user):
    model_version_register(name="mine", source_dir=make_source(tmp_path, name="a"), owner=user)
    with pytest.raises(Conflict):
        model_version_register(name="mine", source_dir=make_source(tmp_path, name="b"), owner=other_user)


def test_verify_catches_a_changed_byte(tmp_path):
    version = model_version_register(name="demo", source_dir=make_source(tmp_path, b"0123456789"))
    model_version_verify(version=version)  # intact: no error
    weights = version.path / "model.safetensors"
    weights.chmod(0o644)
    data = bytearray(weights.read_bytes())
    data[3] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch, match="model.safetensors: sha256 differs"):
        model_version_verify(version=version, mark_failed=True)
    version.refresh_from_db()
    assert version.status == ModelVersion.Status.FAILED
    with pytest.raises(NotFound):  # a failed version is never served
        model_version_resolve(reference="demo@v1", user=None)


def test_verify_catches_missing_and_extra_files(tmp_path):
    version = model_version_register(name="demo", source_dir=make_source(tmp_path))
    version.path.chmod(0o755)
    (version.path / "tokenizer.json").unlink()
    (version.path / "extra.txt").write_text("x")
    with pytest.raises(ChecksumMismatch) as err:
        model_version_verify(version=version)
    assert "tokenizer.json: missing" in err.value.message
    assert "extra.txt: not part of the version" in err.value.message


def test_a_half_finished_registration_is_never_visible(tmp_path, registry_root, monkeypatch):
    """While files are being written, and after a failure, there is no version and no final folder."""
    seen = {}
    real_compute = artifacts.compute_checksums

    def compute_then_fail(folder):
        real_compute(folder)  # the files are all staged at this point
        seen["staging"] = sorted(p.name for p in (registry_root / "demo").iterdir())
        seen["versions"] = ModelVersion.objects.count()
        with pytest.raises(NotFound):
            model_version_resolve(reference="demo", user=None)
        raise OSError("disk full")

    monkeypatch.setattr(artifacts, "compute_checksums", compute_then_fail)
    with pytest.raises(OSError, match="disk full"):
        model_version_register(name="demo", source_dir=make_source(tmp_path))
    assert seen["versions"] == 0
    assert len(seen["staging"]) == 1 and seen["staging"][0].startswith(".staging-")
    assert list((registry_root / "demo").iterdir()) == []  # the staging folder is gone too
    assert not ModelVersion.objects.exists()


def test_a_failed_commit_leaves_no_row_and_the_next_registration_takes_its_place(tmp_path, registry_root, monkeypatch):
    import apps.registry.services as services

    def fail_alias(**kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(services, "model_alias_move", fail_alias)
    with pytest.raises(RuntimeError):
        model_version_register(name="demo", source_dir=make_source(tmp_path, name="a"))
    assert not ModelVersion.objects.exists() and not (registry_root / "demo" / "1").exists()
    monkeypatch.undo()
    version = model_version_register(name="demo", source_dir=make_source(tmp_path, name="b"))
    assert version.number == 1


def test_orphan_folder_from_a_lost_commit_is_replaced(tmp_path, registry_root):
    (registry_root / "demo" / "1").mkdir(parents=True)
    (registry_root / "demo" / "1" / "junk").write_text("left by a crash")
    version = model_version_register(name="demo", source_dir=make_source(tmp_path))
    assert version.number == 1 and not (version.path / "junk").exists()
    model_version_verify(version=version)


def test_pickled_weights_and_incomplete_folders_are_refused(tmp_path):
    src = make_source(tmp_path)
    (src / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(artifacts.LayoutError, match="safetensors only"):
        model_version_register(name="demo", source_dir=src)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(artifacts.LayoutError, match="safetensors"):
        model_version_register(name="demo", source_dir=empty)
    with pytest.raises(artifacts.LayoutError, match="adapter_config.json"):
        model_version_register(name="demo", source_dir=make_source(tmp_path, name="c"), kind="lora")
    assert not ModelVersion.objects.exists()


def test_model_ids_map_to_safe_unique_folders(tmp_path, user):
    name = f"ft:smollm2-135m-instruct:{user.slug}::ftjob-abc123"
    version = model_version_register(name=name, source_dir=make_source(tmp_path), owner=user)
    assert version.registered_model.folder == f"ft_smollm2-135m-instruct_{user.slug}__ftjob-abc123"
    with pytest.raises(InvalidRequest):
        model_version_register(name="bad@name", source_dir=make_source(tmp_path, name="b"))


def test_delete_removes_rows_and_folder(tmp_path, registry_root, user, django_capture_on_commit_callbacks):
    version = model_version_register(name="mine", source_dir=make_source(tmp_path), owner=user)
    with django_capture_on_commit_callbacks(execute=True):
        registered_model_delete(registered_model=version.registered_model)
    assert not RegisteredModel.objects.filter(name="mine").exists()
    assert not (registry_root / "mine").exists()


def test_staging_cleanup_removes_only_old_staging_folders(registry_root):
    old = registry_root / "demo" / ".staging-old"
    new = registry_root / "demo" / ".staging-new"
    old.mkdir(parents=True)
    new.mkdir()
    os.utime(old, (0, 0))
    assert staging_cleanup(older_than_s=60) == [old]
    assert not old.exists() and new.exists()

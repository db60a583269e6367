"""The registry's access helpers: one outcome on every face (404 for what the caller cannot see, 403 for writes
to what they see but do not own), and the deletion guards that apps above the registry register."""

import ast
from pathlib import Path

import pytest

from apps.core.errors import Conflict, Forbidden, NotFound
from apps.registry import services
from apps.registry.models import ModelVersion, RegisteredModel
from apps.registry.selectors import (
    access_model_version,
    access_registered_model,
    access_registered_model_owned,
)
from apps.registry.services import model_version_register, registered_model_delete_owned
from tests.registry.test_services import make_source

pytestmark = pytest.mark.django_db


@pytest.fixture
def models(tmp_path, user):
    model_version_register(name="mine", source_dir=make_source(tmp_path, name="a"), owner=user)  # private
    model_version_register(name="shared", source_dir=make_source(tmp_path, name="b"), owner=user,
                           visibility=RegisteredModel.Visibility.PUBLIC)
    model_version_register(name="store", source_dir=make_source(tmp_path, name="c"))  # the store's: no owner


def test_an_invisible_model_is_not_found_and_a_visible_one_not_owned_is_forbidden(models, user, other_user):
    from django.contrib.auth.models import AnonymousUser

    for name in ["mine", "shared"]:
        assert access_registered_model_owned(user=user, name=name).name == name
    for caller in [other_user, AnonymousUser(), None]:
        with pytest.raises(NotFound):
            access_registered_model(user=caller, name="mine")
        with pytest.raises(NotFound):
            access_registered_model_owned(user=caller, name="mine")
        assert access_registered_model(user=caller, name="shared").name == "shared"
        with pytest.raises(Forbidden) as refused:
            access_registered_model_owned(user=caller, name="shared")
        assert refused.value.status == 403 and refused.value.code == "not_owner"
    with pytest.raises(Forbidden):
        access_registered_model_owned(user=user, name="store")


def test_a_version_by_number(models, user, other_user):
    version = access_model_version(user=user, name="mine", number=1)
    assert version.number == 1 and version.registered_model.name == "mine"
    with pytest.raises(NotFound) as missing:
        access_model_version(user=user, name="mine", number=2)
    assert missing.value.code == "version_not_found"
    with pytest.raises(NotFound) as hidden:
        access_model_version(user=other_user, name="mine", number=1)
    assert hidden.value.code == "model_not_found"
    ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.Status.FAILED)
    assert access_model_version(user=user, name="mine", number=1).status == ModelVersion.Status.FAILED
    with pytest.raises(NotFound):
        access_model_version(user=user, name="mine", number=1, ready_only=True)


def test_deletion_guards_refuse_with_their_reason(models, user, other_user, monkeypatch):
    model = RegisteredModel.objects.get(name="mine")
    monkeypatch.setattr(services, "deletion_guards", [lambda m: None, lambda m: f"{m.name} is pinned"])
    with pytest.raises(Conflict, match="mine is pinned"):
        registered_model_delete_owned(registered_model=model, user=user)
    with pytest.raises(Forbidden):
        registered_model_delete_owned(registered_model=RegisteredModel.objects.get(name="shared"), user=other_user)
    monkeypatch.setattr(services, "deletion_guards", [lambda m: None])
    registered_model_delete_owned(registered_model=model, user=user)
    assert not RegisteredModel.objects.filter(name="mine").exists()


def test_the_catalog_registers_its_guard():
    from apps.catalog.selectors import registered_model_deletion_refusal

    assert registered_model_deletion_refusal in services.deletion_guards


def test_the_registry_imports_nothing_from_the_catalog():
    root = Path(services.__file__).parent
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.startswith("apps.catalog") for n in names), f"{path} imports the catalog"

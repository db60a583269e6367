"""Reads of the registry, each scoped to what the caller may see (another user's private model is a 404)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db.models import Q, QuerySet

from apps.core.errors import NotFound
from apps.registry.models import ModelAlias, ModelVersion, RegisteredModel
from apps.registry.references import parse_reference


def _visible_to(user) -> Q:
    visible = Q(visibility=RegisteredModel.Visibility.PUBLIC)
    if user is not None and user.is_authenticated:
        visible |= Q(owner=user)
    return visible


def registered_model_list(*, user) -> QuerySet[RegisteredModel]:
    return (
        RegisteredModel.objects.filter(_visible_to(user))
        .select_related("owner")
        .prefetch_related("aliases__version")
        .order_by("owner_id", "name")  # the store's own models (no owner) first
    )


def registered_model_get(*, name: str, user) -> RegisteredModel:
    """The model named `name` if `user` may see it; NotFound otherwise (no hint that a private one exists)."""
    model = RegisteredModel.objects.filter(_visible_to(user), name=name).select_related("owner").first()
    if model is None:
        raise NotFound(f"The model {name!r} does not exist.", code="model_not_found", param="model")
    return model


def model_version_resolve(*, reference: str, user, check_access: bool = True) -> ModelVersion:
    """`<id>`, `<id>@<alias>` or `<id>@v<N>` → the ready ModelVersion it names."""
    ref = parse_reference(reference)
    if check_access:
        model = registered_model_get(name=ref.model_id, user=user)
    else:
        model = RegisteredModel.objects.filter(name=ref.model_id).first()
        if model is None:
            raise NotFound(f"The model {ref.model_id!r} does not exist.", code="model_not_found", param="model")
    if ref.number is not None:
        version = model.versions.filter(number=ref.number, status=ModelVersion.Status.READY).first()
    else:
        alias = ModelAlias.objects.filter(registered_model=model, name=ref.alias).select_related("version").first()
        version = alias.version if alias and alias.version.status == ModelVersion.Status.READY else None
    if version is None:
        raise NotFound(f"{ref} does not name a ready version of {model.name}.", code="model_not_found", param="model")
    version.registered_model = model
    return version


def model_version_path(*, reference: str, user, check_access: bool = True) -> Path:
    """The loadable folder of a reference (what `from_pretrained` takes)."""
    return model_version_resolve(reference=reference, user=user, check_access=check_access).path


def registry_problems() -> list[str]:
    """What keeps the registry from serving: an unwritable root, a missing base model or version folder."""
    root = Path(settings.MODELS_REGISTRY_ROOT)
    problems = []
    if not root.is_dir():
        return [f"registry root {root} does not exist"]
    probe = root / ".healthz-probe"
    try:
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        problems.append(f"registry root {root} is not writable ({exc.strerror})")
    base = ModelAlias.objects.filter(registered_model__name=settings.BASE_MODEL_ID, name="latest").select_related(
        "version"
    )
    if not base.exists():
        problems.append(f"base model {settings.BASE_MODEL_ID} is not imported (run: python manage.py import_base_model)")
    missing = [
        str(v)
        for v in ModelVersion.objects.filter(status=ModelVersion.Status.READY).select_related("registered_model")
        if not (root / v.artifact_path / "SHA256SUMS").is_file()
    ]
    if missing:
        problems.append(f"version folders missing: {', '.join(missing[:5])}")
    return problems

"""Reads of the registry, each scoped to what the caller may see.

The `access_*` helpers are the one permission check of every face (pages, /api/v1, /v1): another user's
private model is a NotFound (404), a model the caller sees but does not own is Forbidden (403) for writes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from django.conf import settings
from django.db.models import Q, QuerySet

from apps.core.errors import Forbidden, NotFound
from apps.registry.models import ModelAlias, ModelVersion, RegisteredModel
from apps.registry.references import parse_reference


def _visible_to(user, via: str = "") -> Q:
    """Models `user` may see; `via`: the path to the model from the queried one (`registered_model__`)."""
    visible = Q(**{f"{via}visibility": RegisteredModel.Visibility.PUBLIC})
    if user is not None and user.is_authenticated:
        visible |= Q(**{f"{via}owner": user})
    return visible


def registered_model_list(*, user) -> QuerySet[RegisteredModel]:
    return (
        RegisteredModel.objects.filter(_visible_to(user))
        .select_related("owner")
        .prefetch_related("aliases__version")
        .order_by("owner_id", "name")  # the store's own models (no owner) first
    )


def access_registered_model(*, user, name: str) -> RegisteredModel:
    """The model named `name` if `user` may see it; NotFound otherwise (no hint that a private one exists)."""
    model = RegisteredModel.objects.filter(_visible_to(user), name=name).select_related("owner").first()
    if model is None:
        raise NotFound(f"The model {name!r} does not exist.", code="model_not_found", param="model")
    return model


# The former name; apps/api/openai_views.py still calls it.
def registered_model_get(*, name: str, user) -> RegisteredModel:
    return access_registered_model(user=user, name=name)


def registered_model_require_owner(*, registered_model: RegisteredModel, user) -> RegisteredModel:
    """Forbidden unless `user` owns the model (the store's own models have no owner: they change in the admin)."""
    if registered_model.owner_id is None or user is None or registered_model.owner_id != user.pk:
        raise Forbidden(
            "Only a model's owner can change it; the store's own models change through the admin.", code="not_owner"
        )
    return registered_model


def access_registered_model_owned(*, user, name: str) -> RegisteredModel:
    """For writes: NotFound if `user` may not see the model, Forbidden if they see it but do not own it."""
    return registered_model_require_owner(registered_model=access_registered_model(user=user, name=name), user=user)


def model_version_numbered(
    *, registered_model: RegisteredModel, number: int, ready_only: bool = False, param: str | None = None
) -> ModelVersion:
    """Version `number` of a model the caller already has access to; NotFound if it has none (or none ready)."""
    versions = registered_model.versions.filter(number=number)
    if ready_only:
        versions = versions.filter(status=ModelVersion.Status.READY)
    version = versions.select_related("base_version__registered_model").first()
    if version is None:
        raise NotFound(f"{registered_model.name} has no version {number}.", param=param, code="version_not_found")
    version.registered_model = registered_model
    return version


def access_model_version(*, user, name: str, number: int, ready_only: bool = False) -> ModelVersion:
    """Version `number` of the model `name`, if `user` may see the model; NotFound otherwise."""
    model = access_registered_model(user=user, name=name)
    return model_version_numbered(registered_model=model, number=number, ready_only=ready_only)


def model_version_resolve(*, reference: str, user, check_access: bool = True) -> ModelVersion:
    """`<id>`, `<id>@<alias>` or `<id>@v<N>` → the ready ModelVersion it names."""
    ref = parse_reference(reference)
    found = _version_found(ref, user=user, check_access=check_access)
    if found is not None:
        return found
    # Not found in one query: the same look-up in steps, to say what is missing (the model, or a ready version).
    if check_access:
        model = access_registered_model(user=user, name=ref.model_id)
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


def _version_found(ref, *, user, check_access: bool) -> ModelVersion | None:
    """The ready version `ref` names, with its model, in one query (every run resolves its model: a hot path)."""
    if ref.number is not None:
        versions = ModelVersion.objects.filter(registered_model__name=ref.model_id, number=ref.number)
    else:
        versions = ModelVersion.objects.filter(registered_model__name=ref.model_id, aliases__name=ref.alias,
                                               aliases__registered_model__name=ref.model_id)
    versions = versions.filter(status=ModelVersion.Status.READY).select_related("registered_model__owner")
    if check_access:
        versions = versions.filter(_visible_to(user, via="registered_model__"))
    return versions.first()


def model_version_lineage(*, version: ModelVersion) -> list[ModelVersion]:
    """The versions a version was trained from, root (a base model) first, ending with the version itself:
    base -> first fine-tune -> ... -> this one."""
    chain = [version]
    while chain[-1].base_version_id is not None and len(chain) < 64:  # 64: a guard, never a real depth
        chain.append(ModelVersion.objects.select_related("registered_model").get(pk=chain[-1].base_version_id))
    return chain[::-1]


def model_version_weights_chain(*, version: ModelVersion) -> tuple[ModelVersion, list[ModelVersion]]:
    """How a version's weights are made: the full-weights version at the root and the LoRA adapters merged onto it
    in order (none for full weights; one for a LoRA fine-tune; more for a LoRA fine-tune of a LoRA fine-tune)."""
    adapters = []
    while version.kind == ModelVersion.Kind.LORA and version.base_version_id is not None:
        adapters.append(version)
        version = ModelVersion.objects.select_related("registered_model").get(pk=version.base_version_id)
    return version, adapters[::-1]


def model_version_path(*, reference: str, user, check_access: bool = True) -> Path:
    """The loadable folder of a reference (what `from_pretrained` takes)."""
    return model_version_resolve(reference=reference, user=user, check_access=check_access).path


def registry_problems() -> list[str]:
    """What keeps the registry from serving: an unwritable root, a missing base model or version folder."""
    root = Path(settings.MODELS_REGISTRY_ROOT)
    problems = []
    if not root.is_dir():
        return [f"registry root {root} does not exist"]
    try:
        # A file of its own per probe: concurrent checks (several web processes, a load balancer's probes) each
        # write and remove their own, never one another's.
        with tempfile.NamedTemporaryFile(dir=root, prefix=".healthz-probe-") as probe:
            probe.write(b"ok")
            probe.flush()
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

"""Writes to the catalog: seeding, building and publishing apps, reviews, reports. Each in one transaction."""

from __future__ import annotations

import re
import string

from django.db import transaction
from django.db.models import Max
from django.utils import timezone
from django.utils.text import slugify
from django.utils.translation import gettext as _

from apps.catalog import builtin
from apps.catalog.avatars import avatar_process
from apps.catalog.models import (
    VERSIONED_FIELDS,
    AppVersion,
    Category,
    Report,
    Review,
    StoreApp,
    default_model_reference,
    link_token_new,
)
from apps.core.errors import Conflict, Forbidden, InvalidRequest, NotFound
from apps.registry.models import ModelVersion
from apps.registry.selectors import model_version_resolve

MAX_SECRET_STRINGS = 20
MAX_STARTERS = 6


@transaction.atomic
def store_seed() -> int:
    created = 0
    for position, (slug, name, description) in enumerate(builtin.CATEGORIES):
        _, new = Category.objects.update_or_create(
            slug=slug, defaults={"name": str(name), "description": str(description), "position": position}
        )
        created += new
    for spec in builtin.BUILTIN_APPS:
        fields = {k: v for k, v in spec.items() if k not in ("slug", "category")}
        app, new = StoreApp.objects.get_or_create(
            slug=spec["slug"],
            defaults={
                **fields,
                "category": Category.objects.get(slug=spec["category"]),
                "visibility": StoreApp.Visibility.PUBLIC,
                "is_builtin": True,
                "published_at": timezone.now(),
            },
        )
        if new:
            _version_record(app=app, user=None)
        elif app.is_builtin and _builtin_refresh(app, fields):
            _version_record(app=app, user=None)  # a store whose built-ins predate a change in builtin.py gets it
        created += new
    return created


def _builtin_refresh(app: StoreApp, fields: dict) -> bool:
    """Bring a built-in app's settings to builtin.py's (its prompts and decoding settings are measured there, by
    bench/quality.py); True when something changed."""
    changed = [name for name, value in fields.items() if getattr(app, name) != value]
    for name in changed:
        setattr(app, name, fields[name])
    if changed:
        app.save(update_fields=[*changed, "updated_at"])
    return bool(changed)


def template_fields(template: str) -> list[str]:
    """The {placeholders} of a generator's prompt template, in order, each once."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    except ValueError as exc:
        raise InvalidRequest(f"The prompt template is not valid: {exc}. Use {{name}} for a field.", param="prompt_template") from exc
    bad = [n for n in names if not re.fullmatch(r"[a-z_][a-z0-9_]{0,30}", n)]
    if bad:
        raise InvalidRequest(f"Field names are lower-case letters, digits and _ : {', '.join(bad)}", param="prompt_template")
    return list(dict.fromkeys(names))


def _clean(data: dict, *, user) -> dict:
    data = dict(data)
    upload = data.pop("avatar", None)
    if upload is False:  # the form's "clear" box
        data["avatar"] = ""
    elif upload is not None and hasattr(upload, "read") and not getattr(upload, "_committed", False):
        data["avatar"] = avatar_process(upload)
    starters = [s.strip() for s in data.get("conversation_starters", []) if s and s.strip()]
    if len(starters) > MAX_STARTERS:
        raise InvalidRequest(f"At most {MAX_STARTERS} conversation starters.", param="conversation_starters")
    data["conversation_starters"] = [s[:200] for s in starters]
    secrets = [s.strip() for s in data.get("secret_strings") or [] if isinstance(s, str) and s.strip()]
    if len(secrets) > MAX_SECRET_STRINGS or any(len(s) > 200 for s in secrets):
        raise InvalidRequest(f"At most {MAX_SECRET_STRINGS} secret strings of up to 200 characters.", param="secret_strings")
    data["secret_strings"] = secrets
    reference = data.get("model_reference") or default_model_reference()
    version = model_version_resolve(reference=reference, user=user)  # NotFound for a model the creator may not use
    model_task_check(kind=data.get("kind") or StoreApp.Kind.CHATBOT, version=version)
    data["model_reference"] = reference
    if data.get("kind") == StoreApp.Kind.GENERATOR:
        fields = template_fields(data.get("prompt_template") or "")
        if not fields:
            raise InvalidRequest("A generator needs a prompt template with at least one {field}.", param="prompt_template")
        data["input_fields"] = [{"name": f, "label": f.replace("_", " ").capitalize(), "type": "textarea", "required": True} for f in fields]
    return data


def model_task_check(*, kind: str, version: ModelVersion) -> None:
    """A classifier app runs on a classifier, every other kind on a model that generates: one rule for the builder,
    /api/v1 and any other face that saves an app."""
    if kind == StoreApp.Kind.CLASSIFIER and version.task != ModelVersion.Task.CLASSIFIER:
        raise InvalidRequest(_("A classifier app needs a classifier model: train one with the classification method on "
                               "the Customize page, then pick it under Classifiers."), param="model_reference")
    if kind != StoreApp.Kind.CLASSIFIER and version.task == ModelVersion.Task.CLASSIFIER:
        raise InvalidRequest(_("%(model)s is a classifier: it labels text and cannot chat or generate. Choose the kind "
                               "Classifier for this app, or pick a chat model.") % {"model": version.registered_model.name},
                             param="model_reference")


def _unique_slug(name: str) -> str:
    base = slugify(name)[:60] or "app"
    slug, n = base, 2
    while StoreApp.objects.filter(slug=slug).exists():
        slug, n = f"{base}-{n}", n + 1
    return slug


def link_token_sync(app: StoreApp) -> None:
    """A link-only app has a token (made the first time it becomes link-only); a public one keeps the token it had
    (links shared before still open it); a private one loses it (making an app private revokes its links)."""
    if app.visibility == StoreApp.Visibility.LINK and not app.link_token:
        app.link_token = link_token_new()
    elif app.visibility == StoreApp.Visibility.PRIVATE:
        app.link_token = None


def _version_record(*, app: StoreApp, user) -> AppVersion:
    number = (app.versions.aggregate(n=Max("number"))["n"] or 0) + 1
    return AppVersion.objects.create(app=app, number=number, settings=app.settings_snapshot(), created_by=user)


@transaction.atomic
def app_create(*, user, data: dict) -> StoreApp:
    data = _clean(data, user=user)
    app = StoreApp.objects.create(creator=user, slug=_unique_slug(data["name"]), **data)
    _version_record(app=app, user=user)
    return app


@transaction.atomic
def app_update(*, app: StoreApp, user, data: dict) -> StoreApp:
    if app.creator_id != user.pk:
        raise NotFound("You have no such app.")
    data = _clean(data, user=user)
    for field, value in data.items():
        setattr(app, field, value)
    link_token_sync(app)  # a restored version may change the visibility
    app.save()
    if app.versions.first() is None or app.versions.first().settings != app.settings_snapshot():
        _version_record(app=app, user=user)
    return app


@transaction.atomic
def app_version_restore(*, app: StoreApp, user, number: int) -> StoreApp:
    version = app.versions.filter(number=number).first()
    if version is None:
        raise NotFound(f"{app.slug} has no version {number}.")
    data = {k: v for k, v in version.settings.items() if k in VERSIONED_FIELDS}
    category = version.settings.get("category")
    data["category"] = Category.objects.filter(slug=category).first() if category else None
    return app_update(app=app, user=user, data=data)


@transaction.atomic
def app_publish(*, app: StoreApp, user, visibility: str) -> StoreApp:
    if app.creator_id != user.pk:
        raise NotFound("You have no such app.")
    if visibility not in StoreApp.Visibility.values:
        raise InvalidRequest("Unknown visibility.", param="visibility")
    app.visibility = visibility
    app.published_at = app.published_at or timezone.now()
    link_token_sync(app)
    app.save(update_fields=["visibility", "published_at", "link_token", "updated_at"])
    return app


@transaction.atomic
def app_delete(*, app: StoreApp, user) -> None:
    if app.creator_id != user.pk:
        raise NotFound("You have no such app.")
    app.delete()


# What anyone who may use an app sees of it, and so what a remix copies. Never the instructions, the prompt
# template or the secret strings: those are the creator's, unless they tick `remix_with_instructions`.
REMIX_FIELDS = [
    "name", "short_description", "description", "kind", "input_fields", "conversation_starters", "model_reference",
    "temperature", "top_p", "max_tokens", "repetition_penalty",
]


def _public_template(input_fields: list[dict]) -> str:
    """A generator's prompt template made of its public form alone: one line per field, its label and placeholder."""
    return "\n".join(f"{field.get('label') or field['name']}: {{{field['name']}}}" for field in input_fields)


@transaction.atomic
def app_remix(*, app: StoreApp, user) -> StoreApp:
    """Copy an app into a private draft of the user's own: a public app (or one of the user's own apps).

    The copy gets what the app's page shows (name, descriptions, starters, form fields, model, settings); its
    instructions and prompt template only if the creator allowed it (or the app is the user's own). A generator's
    copy gets a template made of its public form fields. An app on a model the user may not use (its creator's
    private fine-tune) is copied onto the base model, and the copy's description says so. A link-only app the user
    can see but does not own is refused with Forbidden (403)."""
    own = app.creator_id is not None and app.creator_id == user.pk
    if not own and app.visibility != StoreApp.Visibility.PUBLIC:
        raise Forbidden(_("Only public apps can be remixed."), code="remix_not_allowed")
    data = {field: getattr(app, field) for field in REMIX_FIELDS}
    if own or app.remix_with_instructions:
        data.update(instructions=app.instructions, prompt_template=app.prompt_template, secret_strings=app.secret_strings)
    elif app.kind == StoreApp.Kind.GENERATOR:
        data["prompt_template"] = _public_template(app.input_fields)
    try:
        model_version_resolve(reference=app.model_reference, user=user)
    except NotFound:
        data["model_reference"] = default_model_reference()
        notice = remix_model_notice(model=data["model_reference"])
        data["description"] = f"{data['description']}\n\n{notice}".strip()[:4000]
    data.update(name=f"{app.name} (remix)"[:80], visibility=StoreApp.Visibility.PRIVATE, category=app.category)
    copy = StoreApp.objects.create(creator=user, slug=_unique_slug(data["name"]), remixed_from=app, **data)
    _version_record(app=copy, user=user)
    return copy


def remix_model_notice(*, model: str) -> str:
    """Why a remix runs on another model than its original (written into the copy's description, shown on the page)."""
    return _("The original app runs on a model that only its creator can use; this remix runs on the base model "
             "%(model)s instead, so its answers will differ.") % {"model": model}


@transaction.atomic
def review_save(*, app: StoreApp, user, rating: int, text: str) -> Review:
    """One review per user and app: a second one edits the first."""
    if not 1 <= int(rating) <= 5:
        raise InvalidRequest("A rating is 1 to 5 stars.", param="rating")
    if app.creator_id == user.pk:
        raise Conflict("You cannot review your own app.")
    review, _ = Review.objects.update_or_create(app=app, user=user, defaults={"rating": int(rating), "text": text.strip()})
    return review


@transaction.atomic
def review_delete(*, app: StoreApp, user) -> None:
    deleted, _ = Review.objects.filter(app=app, user=user).delete()
    if not deleted:
        raise NotFound("You have not reviewed this app.", code="review_not_found")


@transaction.atomic
def report_create(*, app: StoreApp, user, reason: str, details: str = "") -> Report:
    if reason not in Report.Reason.values:
        raise InvalidRequest("Choose a reason.", param="reason")
    return Report.objects.create(app=app, user=user, reason=reason, details=details.strip())

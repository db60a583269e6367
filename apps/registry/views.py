"""Registry pages: the models a visitor may see, their versions, model cards and downloads."""

import functools

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from apps.core.errors import Forbidden, NotFound, StoreError
from apps.registry import artifacts
from apps.registry.downloads import folder_files, zip_response
from apps.registry.merged import (
    RETRY_FAILED_AFTER,
    merged_weights_of,
    merged_weights_request,
)
from apps.registry.models import MergedWeights
from apps.registry.selectors import (
    access_model_version,
    access_registered_model,
    access_registered_model_owned,
    model_version_lineage,
    model_version_numbered,
    registered_model_list,
)
from apps.registry.references import DEFAULT_ALIAS
from apps.registry.services import model_alias_move, registered_model_delete_owned


def _access_errors_as_pages(view):
    """The access helpers' outcomes as pages: NotFound is the 404 page, Forbidden the 403 page."""

    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except NotFound as exc:
            raise Http404(exc.message) from exc
        except Forbidden as exc:
            raise PermissionDenied(exc.message) from exc

    return wrapped


@require_GET
def model_list(request):
    return render(request, "registry/model_list.html", {"models": registered_model_list(user=request.user)})


@require_GET
@_access_errors_as_pages
def model_detail(request, name):
    model = access_registered_model(user=request.user, name=name)
    versions = list(model.versions.select_related("base_version__registered_model").prefetch_related("aliases"))
    for v in versions:  # base -> first fine-tune -> ... : the versions each one's weights come from
        v.lineage = model_version_lineage(version=v)[:-1]
        v.is_latest = any(a.name == DEFAULT_ALIAS for a in v.aliases.all())
    moves = model.alias_moves.select_related("from_version", "to_version", "moved_by")[:20]
    return render(request, "registry/model_detail.html", {"model": model, "versions": versions, "moves": moves})


@require_GET
@_access_errors_as_pages
def version_detail(request, name, number):
    version = access_model_version(user=request.user, name=name, number=number)
    card_header, card_body = ({}, "")
    if (version.path / artifacts.CARD_FILE).is_file():
        card_header, card_body = artifacts.read_model_card(version.path)
    return render(
        request,
        "registry/version_detail.html",
        {"model": version.registered_model, "version": version, "card_header": card_header, "card_body": card_body,
         "lineage": model_version_lineage(version=version)[:-1],
         "merged": merged_weights_of(version=version) if version.kind == version.Kind.LORA else None},
    )


@require_GET
@_access_errors_as_pages
def version_download(request, name, number):
    """The version folder as a zip, streamed. For an adapter, `?merged=1` gives full weights with the adapter
    applied: streamed when built, else a 202 page while a task builds them (once) beside the version."""
    version = access_model_version(user=request.user, name=name, number=number, ready_only=True)
    folder = version.registered_model.folder
    try:
        if request.GET.get("merged") != "1":
            names = folder_files(version.path, version.checksums)
            return zip_response(request, folder=version.path, names=names, filename=f"{folder}-v{number}.zip")
        merged = merged_weights_request(version=version)
        if merged.status == MergedWeights.Status.READY:
            names = folder_files(merged.path, merged.checksums)
            return zip_response(request, folder=merged.path, names=names, filename=f"{folder}-v{number}-merged.zip")
    except StoreError as exc:
        messages.error(request, exc.message)
        return redirect(version.get_absolute_url())
    # Being prepared (202: come back), or failed a short while ago (503: the store could not, for now).
    building = merged.status == MergedWeights.Status.BUILDING
    retry_after = 60 if building else int(RETRY_FAILED_AFTER.total_seconds())
    response = render(request, "registry/merged_pending.html",
                      {"model": version.registered_model, "version": version, "merged": merged},
                      status=202 if building else 503)
    response["Retry-After"] = str(retry_after)
    return response


@login_required
@require_POST
@_access_errors_as_pages
def version_make_latest(request, name, number):
    """The owner points `latest` at a version (a rollback is one such move): apps pinned to latest follow it."""
    model = access_registered_model_owned(user=request.user, name=name)
    try:
        version = model_version_numbered(registered_model=model, number=number, ready_only=True)
        model_alias_move(version=version, alias=DEFAULT_ALIAS, moved_by=request.user)
    except StoreError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, _("latest now points at v%(number)s.") % {"number": number})
    return redirect(model.get_absolute_url())


@login_required
@require_POST
@_access_errors_as_pages
def model_delete(request, name):
    model = access_registered_model_owned(user=request.user, name=name)
    try:
        registered_model_delete_owned(registered_model=model, user=request.user)
    except StoreError as exc:  # a deletion guard refused: apps still run on it, or models derive from it
        messages.error(request, exc.message)
        return redirect(model.get_absolute_url())
    messages.info(request, f"{name} was deleted.")
    return redirect("registry:model-list")

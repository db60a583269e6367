"""Registry pages: the models a visitor may see, their versions, model cards and downloads."""

import functools
import shutil

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from apps.core.errors import Forbidden, NotFound, StoreError
from apps.registry import artifacts
from apps.registry.selectors import (
    access_model_version,
    access_registered_model,
    access_registered_model_owned,
    registered_model_list,
)
from apps.registry.services import model_version_archive, registered_model_delete_owned


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
    versions = model.versions.select_related("base_version__registered_model").prefetch_related("aliases")
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
        {"model": version.registered_model, "version": version, "card_header": card_header, "card_body": card_body},
    )


class _TemporaryFile:
    """A file object that removes its folder when the response closes it."""

    def __init__(self, path):
        self.path = path
        self.fh = open(path, "rb")

    def read(self, *args):
        return self.fh.read(*args)

    def close(self):
        self.fh.close()
        shutil.rmtree(self.path.parent, ignore_errors=True)


@require_GET
@_access_errors_as_pages
def version_download(request, name, number):
    """The version folder as a zip; for an adapter, `?merged=1` gives full weights with the adapter applied."""
    version = access_model_version(user=request.user, name=name, number=number, ready_only=True)
    merged = request.GET.get("merged") == "1"
    try:
        archive = model_version_archive(version=version, merged=merged)
    except StoreError as exc:
        messages.error(request, exc.message)
        return redirect(version.get_absolute_url())
    filename = f"{version.registered_model.folder}-v{number}{'-merged' if merged else ''}.zip"
    return FileResponse(_TemporaryFile(archive), as_attachment=True, filename=filename, content_type="application/zip")


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

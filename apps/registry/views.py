import shutil

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from apps.core.errors import NotFound, StoreError
from apps.registry import artifacts
from apps.registry.selectors import registered_model_get, registered_model_list


@require_GET
def model_list(request):
    return render(request, "registry/model_list.html", {"models": registered_model_list(user=request.user)})


def _model_or_404(request, name):
    try:
        return registered_model_get(name=name, user=request.user)
    except NotFound as exc:
        raise Http404(exc.message) from exc


@require_GET
def model_detail(request, name):
    model = _model_or_404(request, name)
    versions = model.versions.select_related("base_version__registered_model").prefetch_related("aliases")
    moves = model.alias_moves.select_related("from_version", "to_version", "moved_by")[:20]
    return render(request, "registry/model_detail.html", {"model": model, "versions": versions, "moves": moves})


@require_GET
def version_detail(request, name, number):
    model = _model_or_404(request, name)
    version = model.versions.filter(number=number).select_related("base_version__registered_model").first()
    if version is None:
        raise Http404(f"{name} has no version {number}")
    version.registered_model = model
    card_header, card_body = ({}, "")
    if (version.path / artifacts.CARD_FILE).is_file():
        card_header, card_body = artifacts.read_model_card(version.path)
    return render(
        request,
        "registry/version_detail.html",
        {"model": model, "version": version, "card_header": card_header, "card_body": card_body},
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
def version_download(request, name, number):
    """The version folder as a zip; for an adapter, `?merged=1` gives full weights with the adapter applied."""
    from apps.registry.services import model_version_archive

    model = _model_or_404(request, name)
    version = model.versions.filter(number=number, status="ready").select_related("base_version").first()
    if version is None:
        raise Http404(f"{name} has no version {number}")
    version.registered_model = model
    merged = request.GET.get("merged") == "1"
    try:
        archive = model_version_archive(version=version, merged=merged)
    except StoreError as exc:
        messages.error(request, exc.message)
        return redirect(version.get_absolute_url())
    filename = f"{model.folder}-v{number}{'-merged' if merged else ''}.zip"
    return FileResponse(_TemporaryFile(archive), as_attachment=True, filename=filename, content_type="application/zip")


@login_required
@require_POST
def model_delete(request, name):
    from apps.registry.services import registered_model_delete_owned

    model = _model_or_404(request, name)
    try:
        registered_model_delete_owned(registered_model=model, user=request.user)
    except StoreError as exc:
        messages.error(request, exc.message)
        return redirect(model.get_absolute_url())
    messages.info(request, f"{name} was deleted.")
    return redirect("registry:model-list")

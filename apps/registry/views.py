from django.http import Http404
from django.shortcuts import render
from django.views.decorators.http import require_GET

from apps.core.errors import NotFound
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

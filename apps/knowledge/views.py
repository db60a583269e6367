"""The builder's face of knowledge files: upload (or replace), delete, and the status the page polls.

Thin: an app the user owns (`access_knowledge_app`: anyone else gets a 404), one service, a redirect back to the
builder with a message, or JSON for the poll. Nothing here sends a file's content back.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, JsonResponse
from django.shortcuts import redirect
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from apps.core.errors import NotFound, StoreError
from apps.knowledge import services
from apps.knowledge.selectors import access_knowledge_app, access_knowledge_file, knowledge_file_list


def _app(request, slug):
    try:
        return access_knowledge_app(user=request.user, slug=slug)
    except NotFound as exc:
        raise Http404(exc.message) from exc


def file_status(knowledge) -> dict:
    """What the builder shows of a file (the API's serializer gives the same fields)."""
    return {"id": knowledge.pk, "name": knowledge.name, "status": knowledge.status,
            "status_label": knowledge.get_status_display(), "progress": round(knowledge.progress, 3),
            "message": knowledge.message, "content_type": knowledge.get_content_type_display(),
            "size": knowledge.size, "chunks": knowledge.chunk_count}


@login_required
@require_POST
def knowledge_upload(request, slug):
    app = _app(request, slug)
    upload = request.FILES.get("file")
    if upload is None:
        messages.error(request, _("Choose a file to upload."))
    else:
        try:
            knowledge = services.knowledge_file_upload(app=app, user=request.user, upload=upload)
        except StoreError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, _("%(name)s is uploaded: it is being indexed.") % {"name": knowledge.name})
    return redirect(f"/build/{app.slug}/#knowledge")


@login_required
@require_POST
def knowledge_delete(request, slug, pk):
    app = _app(request, slug)
    try:
        knowledge = access_knowledge_file(user=request.user, slug=slug, file_id=pk)
    except NotFound as exc:
        raise Http404(exc.message) from exc
    services.knowledge_file_delete(knowledge=knowledge)
    messages.info(request, _("%(name)s was removed from the app's knowledge.") % {"name": knowledge.name})
    return redirect(f"/build/{app.slug}/#knowledge")


@login_required
@require_GET
def knowledge_status(request, slug):
    """The app's files and how far their indexing is (the builder polls this while one is being indexed)."""
    app = _app(request, slug)
    return JsonResponse({"files": [file_status(f) for f in knowledge_file_list(app=app)]})

"""The browser's face of runs: an app's run streamed as server-sent events, and the chat page's conversations.

Thin: read the body, call the run service, stream; a `StoreError` (bad input, a quota, the engine's own
errors) becomes the one error body as JSON with its status, which the page shows as a readable message.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.views.decorators.http import require_GET, require_POST

from apps.accounts.limits import client_address
from apps.catalog.access import access_app, access_app_owned
from apps.catalog.models import StoreApp
from apps.chat.conversations import (
    access_conversation,
    conversation_delete,
    conversation_rename,
)
from apps.chat.services import Caller, app_classify, app_run_start, run_app_events
from apps.core.errors import StoreError
from apps.core.page_json import error_response, json_body
from apps.core.streaming import sse_events, sse_response, streams_async


def _stream_run(request, find_app):
    """Start the app that `find_app()` returns and stream its answer; bad input is a JSON 4xx instead. A classifier
    app's answer is one JSON object (`label`, `scores`, `usage`, `run`): one forward pass, nothing to stream."""
    caller = Caller(request.user, address=client_address(request.META))
    try:
        app = find_app()
        if app.kind == StoreApp.Kind.CLASSIFIER:
            outcome = app_classify(caller=caller, app=app, text=json_body(request).get("text", ""))
            return JsonResponse(outcome.public(), headers=outcome.limit_headers)
        run = app_run_start(caller=caller, app=app, inputs=json_body(request), stream_async=streams_async(request))
    except StoreError as exc:  # the engine's errors included (a busy model: 503 with Retry-After)
        return error_response(exc)
    response = sse_response(request, sse_events(run_app_events(run)))
    for name, value in run.limit_headers.items():
        response[name] = value
    return response


@require_POST
def app_run(request, slug):
    """Run an app with the user's input; the answer streams back as server-sent events."""
    return _stream_run(request, lambda: access_app(user=request.user, slug=slug))


@login_required
@require_POST
def build_preview(request, slug):
    """Run the saved draft, published or not: the builder's live preview."""
    return _stream_run(request, lambda: access_app_owned(user=request.user, slug=slug))


def _conversation_view(view):
    """A conversation of the caller's own by its id in the URL; another user's is a JSON 404."""

    def wrapped(request, pk):
        try:
            return view(request, access_conversation(user=request.user, conversation_id=pk))
        except StoreError as exc:
            return error_response(exc)

    return login_required(wrapped)


@require_GET
@_conversation_view
def conversation_messages(request, conversation):
    return JsonResponse({
        "id": conversation.pk,
        "title": conversation.title,
        "messages": [{"id": m.pk, "role": m.role, "content": m.content} for m in conversation.messages.all()],
    })


@require_POST
@_conversation_view
def conversation_rename_view(request, conversation):
    conversation_rename(conversation=conversation, title=json_body(request).get("title", ""))
    return JsonResponse({"id": conversation.pk, "title": conversation.title})


@require_POST
@_conversation_view
def conversation_delete_view(request, conversation):
    pk = conversation.pk
    conversation_delete(conversation=conversation)
    return JsonResponse({"deleted": pk})

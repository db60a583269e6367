"""Request bodies capped before they are read: an oversized upload gets a 413, and nothing of it is written.

One rule, `body_limit(path)`: on the upload paths (settings.UPLOAD_PATHS: training files on the page, /api/v1 and
/v1) a training file and the form around it (UPLOAD_REQUEST_MAX_BYTES); anywhere else REQUEST_BODY_MAX_BYTES (the
builder's form with its avatar, an API request). Two layers apply it:

- `BodyLimitASGI` wraps the ASGI application (store/asgi.py). Django's ASGI handler reads the whole body into a
  temporary file before any middleware runs, so the cap has to come before Django: a body whose Content-Length is
  over the cap is not read at all, and one without a length (chunked) or longer than it said is cut as soon as it
  passes the cap. Django then gets an empty body and a mark in the request's scope.
- `RequestBodyLimitMiddleware` answers: a 413 for the mark, or for a Content-Length over the cap (under WSGI and
  the test client, which never read past the Content-Length), before anything reads the body (CSRF's check reads
  a POST's form only after every middleware's request phase). OpenAI's error shape under /v1/ and /api/, a
  readable page elsewhere.
"""

from __future__ import annotations

from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import render
from django.template.defaultfilters import filesizeformat
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _

from apps.core.errors import error_body

SCOPE_KEY = "store.body_too_large"  # set by BodyLimitASGI: the bytes it saw (at least), when over the cap


def body_limit(path: str) -> int:
    """The most bytes a request body to `path` may have."""
    if path.startswith(tuple(settings.UPLOAD_PATHS)):
        return settings.UPLOAD_REQUEST_MAX_BYTES
    return settings.REQUEST_BODY_MAX_BYTES


def _declared_length(value) -> int | None:
    try:
        return int(value) if value not in (None, b"", "") else None
    except ValueError:
        return None


class BodyLimitASGI:
    """ASGI middleware in front of Django: no body over the cap reaches Django's temporary file."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = body_limit(scope["path"])
        declared = _declared_length(dict(scope.get("headers") or []).get(b"content-length"))
        scope = dict(scope)  # Django reads the mark from the request's scope: this request's own copy
        if declared is not None and declared > limit:
            scope[SCOPE_KEY] = declared
            return await self.app(scope, _without_body(receive), send)
        return await self.app(scope, _counted(receive, scope, limit), send)


def _skipping_body(receive):
    """What comes after the body Django got: the client's disconnect, with whatever it still sends skipped."""

    async def wrapped():
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return message

    return wrapped


def _without_body(receive):
    """An empty body for Django, the client's disconnect after (Django listens for it while it answers)."""
    given, after = False, _skipping_body(receive)

    async def wrapped():
        nonlocal given
        if given:
            return await after()
        given = True
        return {"type": "http.request", "body": b"", "more_body": False}

    return wrapped


def _counted(receive, scope: dict, limit: int):
    """The body as it comes, counted: once it passes `limit`, it ends there (nothing more of it reaches Django)
    and the scope is marked."""
    seen, after = 0, None

    async def wrapped():
        nonlocal seen, after
        if after is not None:
            return await after()
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                scope[SCOPE_KEY] = seen
                after = _skipping_body(receive)
                return {"type": "http.request", "body": b"", "more_body": False}
        return message

    return wrapped


class RequestBodyLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        limit = body_limit(request.path)
        marked = getattr(request, "scope", {}).get(SCOPE_KEY)  # ASGI requests only
        declared = _declared_length(request.META.get("CONTENT_LENGTH"))
        if marked or (declared is not None and declared > limit):
            return body_too_large(request, size=declared if declared and declared > limit else None, limit=limit)
        return self.get_response(request)


def body_too_large(request, *, size: int | None, limit: int):
    """413. `size` None: the body had no length (or a false one) and was cut at the cap."""
    upload = request.path.startswith(tuple(settings.UPLOAD_PATHS))
    if request.path.startswith(("/v1/", "/api/")):
        what = "The upload" if upload else "The request body"
        amount = f"is {size:,} bytes" if size is not None else f"is larger than {limit:,} bytes"
        rule = f"uploads here may have {limit:,} bytes at most (the file and the form around it)" if upload else (
            f"a request body may have {limit:,} bytes at most")
        body = error_body(f"{what} {amount}; {rule}.", status=413, param="file" if upload else None,
                          code="file_too_large" if upload else "request_too_large")
        return JsonResponse(body, status=413)
    if size is not None:
        message = _("This upload is too large: %(size)s, and the limit here is %(limit)s. Choose a smaller file and try again.") % {
            "size": filesizeformat(size), "limit": filesizeformat(limit)}
    else:
        message = _("This upload is larger than %(limit)s, the limit here. Choose a smaller file and try again.") % {
            "limit": filesizeformat(limit)}
    referer = request.META.get("HTTP_REFERER", "")
    back = referer if url_has_allowed_host_and_scheme(referer, allowed_hosts={request.get_host()}) else request.path
    return render(request, "413.html", {"message": message, "back": back}, status=413)

"""JSON in and out of the pages' own endpoints (what store.js, compare.js and the customize page fetch with the
page's session): a body that must be a JSON object, and a StoreError as OpenAI's error shape with its status and
headers (a 429's Retry-After). The API faces have their own mapping (apps/api/errors.py)."""

from __future__ import annotations

import json

from django.http import HttpRequest, JsonResponse
from django.utils.translation import gettext as _

from apps.core.errors import InvalidRequest, StoreError, error_body_for


def json_body(request: HttpRequest) -> dict:
    """The request's JSON object (an empty body is {}); anything else is a 400 the page can show."""
    try:
        body = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise InvalidRequest(_("The request could not be read. Reload the page and try again."))
    return body


def error_response(exc: StoreError) -> JsonResponse:
    return JsonResponse(error_body_for(exc), status=exc.status, headers=exc.headers)

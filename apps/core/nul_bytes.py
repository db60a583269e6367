"""A NUL byte in a request's path or query string is refused with a 400 before any view sees it.

PostgreSQL text cannot hold NUL (0x00): a lookup with one (`/v1/models/a%00b`, `?q=%00`, a file or job id) raises
ValueError in the driver, a 500 on every face (the fuzzing run in tests/api/test_fuzz.py found it; SQLite takes
it). No id, slug, name or search the store knows contains one, so the request is refused whole, here: OpenAI's
error shape under /v1/ and /api/, Django's plain 400 page elsewhere. Bodies need nothing: DRF's and Django's
form fields already refuse NUL in text.
"""

from __future__ import annotations

from django.core.exceptions import SuspiciousOperation
from django.http import JsonResponse
from django.views.defaults import bad_request

from apps.core.errors import error_body

NUL = "\x00"


def has_nul_byte(request) -> bool:
    if NUL in request.path:
        return True
    return any(NUL in key or any(NUL in value for value in values) for key, values in request.GET.lists())


class NulByteMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not has_nul_byte(request):
            return self.get_response(request)
        if request.path.startswith(("/v1/", "/api/")):
            body = error_body("The request's path or query string contains a NUL byte (%00).", code="invalid_characters")
            return JsonResponse(body, status=400)
        return bad_request(request, SuspiciousOperation("NUL byte in the path or query string"))

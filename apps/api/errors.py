"""One error shape for /v1 and /api/v1, OpenAI's: {"error": {"message", "type", "param", "code"}}, with its statuses."""

from __future__ import annotations

from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response

from apps.core.errors import StoreError, error_body, error_body_for


def openai_error(status: int, message: str, *, type: str | None = None, param=None, code=None) -> Response:
    return Response(error_body(message, status=status, type=type, param=param, code=code), status=status)


def _join(path: str, key) -> str:
    if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
        return f"{path}[{key}]"
    if key == "non_field_errors":
        return path
    return f"{path}.{key}" if path else str(key)


def _first_validation_error(detail, path: str = "") -> tuple[str | None, str]:
    """The first error of a DRF error tree, with OpenAI's param path: `messages[0].role`."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            return _first_validation_error(value, _join(path, key))
    if isinstance(detail, list) and detail:
        if all(isinstance(d, str) for d in detail):
            return path or None, str(detail[0])
        for index, item in enumerate(detail):
            if item:
                return _first_validation_error(item, _join(path, index))
    return path or None, str(detail)


def api_exception_handler(exc, context):
    if isinstance(exc, exceptions.ValidationError):
        param, message = _first_validation_error(exc.detail)
        return openai_error(400, f"{param}: {message}" if param else message, param=param, code="invalid_value")
    if isinstance(exc, exceptions.ParseError):
        return openai_error(400, f"We could not parse the JSON body of your request. ({exc.detail})", code="invalid_json")
    if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
        message = exc.detail if isinstance(exc, exceptions.AuthenticationFailed) else (
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
        )
        response = openai_error(401, str(message), code="invalid_api_key")
        response["WWW-Authenticate"] = "Bearer"
        return response
    if isinstance(exc, exceptions.Throttled):
        response = openai_error(429, str(exc.detail), type="rate_limit_error", code="rate_limit_exceeded")
        if exc.wait:
            response["Retry-After"] = str(int(exc.wait) + 1)
        return response
    if isinstance(exc, (exceptions.NotFound, Http404)):
        return openai_error(404, str(getattr(exc, "detail", exc)) or "Not found.", code="not_found")
    if isinstance(exc, exceptions.APIException):
        return openai_error(exc.status_code, str(exc.detail), code=getattr(exc, "default_code", None))
    if isinstance(exc, StoreError):  # the engine's errors and the rate limits included
        return Response(error_body_for(exc), status=exc.status, headers=exc.headers)
    return None

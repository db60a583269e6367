"""The project's one error hierarchy. No Django here: the engine (pure Python) raises these too.

Services and engines raise a `StoreError` subclass; one mapping turns it into an API error
(`apps/api/errors.py`), one into a page's JSON or server-sent event (`error_body`), so no view builds error JSON
itself. The body has OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations


class StoreError(Exception):
    """An error a user can cause and understand: a message to show, a machine-readable code, an HTTP status."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_request"
    headers: dict = {}  # HTTP headers the answer carries (a 429's Retry-After and rate-limit figures)

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param


class InvalidRequest(StoreError):
    pass


class Forbidden(StoreError):
    """The caller may see the object but not change it (another user's object is a NotFound instead)."""

    status = 403
    code = "forbidden"


class NotFound(StoreError):
    status = 404
    code = "not_found"


class Conflict(StoreError):
    status = 409
    code = "conflict"


class ClientGone(StoreError):
    """The client left before its answer started: nothing was generated (and nobody reads this answer)."""

    status = 499  # nginx's "client closed request"
    code = "client_closed_request"


class ServerError(StoreError):
    """Not the caller's fault: the store could not do what was asked (an engine failed, a service is down)."""

    status = 500
    type = "server_error"
    code = "server_error"


def error_body(message: str, *, status: int = 400, type: str | None = None, param: str | None = None,
               code: str | None = None) -> dict:
    """The error JSON of every face: OpenAI's shape."""
    if type is None:
        type = "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_body_for(exc: StoreError) -> dict:
    return error_body(exc.message, status=exc.status, type=exc.type, param=exc.param, code=exc.code)

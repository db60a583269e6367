"""The project's error type: services raise these, views and the API turn them into responses."""

from __future__ import annotations


class StoreError(Exception):
    """An error a user can cause and understand: a message to show, a machine-readable code, an HTTP status."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_request"

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

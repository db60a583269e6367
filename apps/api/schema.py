"""The OpenAPI description beyond what drf-spectacular infers: the /v1 views (plain APIViews), and the error
answers each operation can give, all in the one error shape (`apps/api/errors.py`).

tests/api/test_fuzz.py holds the schema to its word: schemathesis runs against a live store and fails on any
status, content type, header or body that the schema does not describe.
"""

from __future__ import annotations

from drf_spectacular.extensions import (
    OpenApiAuthenticationExtension,
    OpenApiSerializerExtension,
)
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter

ERROR_COMPONENT = "Error"
ERROR_SCHEMA = {
    "type": "object",
    "description": "Every error of /v1 and /api/v1, in OpenAI's shape.",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string", "description": "What went wrong and what to do, for a person."},
                "type": {"type": "string", "description": "`invalid_request_error`, `rate_limit_error` or `server_error`."},
                "param": {"type": "string", "nullable": True, "description": "The field or parameter at fault."},
                "code": {"type": "string", "nullable": True, "description": "Machine-readable: `not_found`, `invalid_value`, ..."},
            },
            "required": ["message", "type", "param", "code"],
        },
    },
    "required": ["error"],
}

# A server-sent event as a client reads it (Open API 3.0 has a text/event-stream schema describe one event): its
# `data` is a JSON chunk, or `[DONE]` at the end of a /v1 stream.
EVENT_COMPONENT = "ServerSentEvent"
EVENT_SCHEMA = {
    "type": "object",
    "properties": {"data": {"type": "string", "description": "A JSON object; `[DONE]` ends a /v1 stream."},
                   "event": {"type": "string"}, "id": {"type": "string"}, "retry": {"type": "integer"}},
    "required": ["data"],
}

ERROR_DESCRIPTIONS = {
    "400": "The request is not valid: `param` names the field or parameter at fault (any request with a NUL byte in "
           "its path or query string is a 400 too).",
    "401": "No API key, or one that is wrong, revoked or expired.",
    "403": "Not allowed: the object is visible to the caller but not theirs to change, or a browser session's request "
           "lacks its CSRF token.",
    "404": "No such object, or one the caller may not see (also a `cursor` or `after` that names none).",
    "409": "The object's state does not allow it now.",
    "413": "The body is over the size limit (the file and the form around it, on an upload).",
    "415": "The body's content type is not one this operation takes.",
    "429": "A rate limit or quota is spent; `Retry-After` says when to come back where a window will turn.",
    "503": "The model server is busy (code `engine_overloaded`: its queue for the model is full; `Retry-After` says "
           "in how many seconds to try again, as the `openai` client does) or not ready (`model_unavailable`).",
}

# Statuses that the shape of an operation does not tell, by operationId, each from the code that answers it.
# The rest follow from the operation (see `operation_error_statuses`).
_GENERATION = {"404", "429", "503"}  # a model or app that is not the caller's to use; the quotas; the engine
_OWNED = {"403"}  # access_*_owned: visible but another user's
OPERATION_ERRORS: dict[str, set[str]] = {
    "v1_chat_completions_create": _GENERATION,
    "v1_completions_create": _GENERATION,
    "api_v1_apps_runs_create": _GENERATION,
    "api_v1_apps_create": {"404"},  # the `model` reference names no model the caller may use
    "api_v1_apps_partial_update": _OWNED | {"404"},
    "api_v1_apps_destroy": _OWNED,
    "api_v1_apps_publish_create": _OWNED,
    "api_v1_apps_versions_list": _OWNED,
    "api_v1_apps_versions_restore_create": _OWNED,
    "api_v1_apps_reviews_create": {"409"},  # a creator reviewing their own app
    "api_v1_files_create": {"429"},  # the storage quota
    "v1_files_create": {"429"},
    "api_v1_files_destroy": {"409"},  # jobs refer to the file
    "v1_files_destroy": {"409"},
    "api_v1_jobs_create": {"404", "429"},  # files and the base model by reference; the active-jobs quota
    "v1_fine_tuning_jobs_create": {"404", "429"},
    "api_v1_jobs_cancel_create": {"409"},  # the job has finished
    "v1_fine_tuning_jobs_cancel_create": {"409"},
    "api_v1_models_destroy": _OWNED | {"409"},  # an app runs on it, or models derive from it
    "v1_models_destroy": _OWNED | {"409"},  # a base model; an app, a job or a fine-tune depends on it
    "api_v1_models_aliases_update": _OWNED | {"409"},  # the version is not ready
    "api_v1_votes_create": {"404", "409"},  # the comparison by id; answers not finished, or already voted
    "api_v1_feedback_create": {"404"},  # the message or run by id
}

UNSAFE_METHODS = {"post", "put", "patch", "delete"}
PAGE_PARAMETERS = {"cursor", "after"}


def operation_error_statuses(path: str, method: str, operation: dict) -> set[str]:
    """The error statuses an operation can answer with, from its shape, plus OPERATION_ERRORS."""
    statuses = set(OPERATION_ERRORS.get(operation["operationId"], ())) | {"400"}  # apps/core/nul_bytes.py, at least
    parameters = operation.get("parameters", [])
    body = operation.get("requestBody")
    if body:
        statuses.add("413")  # apps/core/uploads.py caps every body before it is read
        statuses.add("415")  # DRF's parsers refuse a content type they do not read
    if operation.get("security"):
        statuses.add("401")
    if path.startswith("/api/") and method in UNSAFE_METHODS:
        statuses.add("403")  # the browser's session authentication checks CSRF on writes
    if any(p["in"] == "path" for p in parameters) or any(p["name"] in PAGE_PARAMETERS for p in parameters):
        statuses.add("404")
    return statuses


def _takes_a_file(content: dict, components: dict) -> bool:
    for media in content.values():
        schema = media.get("schema", {})
        schema = components.get(schema.get("$ref", "").rsplit("/", 1)[-1], schema)
        if any(p.get("format") == "binary" for p in schema.get("properties", {}).values()):
            return True
    return False


def _one_media_type(operation: dict, components: dict) -> None:
    """A body with a file travels as multipart/form-data, any other as JSON: the parsers DRF lists by default also
    take forms, but the API is described (and fuzzed) as its clients use it. A form cannot carry a JSON type, so a
    fuzzer's `0` for a string there is the string "0", not a wrong type."""
    content = operation.get("requestBody", {}).get("content", {})
    keep = "multipart/form-data" if _takes_a_file(content, components) else "application/json"
    if keep in content:
        operation["requestBody"]["content"] = {keep: content[keep]}


def _events_described(responses: dict) -> None:
    for response in responses.values():
        stream = response.get("content", {}).get("text/event-stream")
        if stream is not None:
            stream["schema"] = {"$ref": f"#/components/schemas/{EVENT_COMPONENT}"}


def add_error_responses(result, generator, request, public):
    """Postprocessing hook: one media type per request body, server-sent events as events, and the error answers
    of every operation, in the one error shape."""
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components[ERROR_COMPONENT] = ERROR_SCHEMA
    components[EVENT_COMPONENT] = EVENT_SCHEMA
    error_content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}}}
    retry_after = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds until the window turns."}}
    busy_retry_after = {"Retry-After": {"schema": {"type": "integer"},
                                        "description": "Seconds until the model server is likely to take the request."}}
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            _one_media_type(operation, components)
            responses = operation["responses"]
            _events_described(responses)
            for status in sorted(operation_error_statuses(path, method, operation)):
                response = {"description": ERROR_DESCRIPTIONS[status], "content": error_content}
                if status == "429":
                    response["headers"] = retry_after
                elif status == "503":
                    response["headers"] = busy_retry_after
                responses.setdefault(status, response)
    return result


# /v1 lists that page with OpenAI's `after` and `limit` (apps/api/openai_tuning.py `_page`), and all its lists.
V1_PAGED = {"/v1/files", "/v1/fine_tuning/jobs", "/v1/fine_tuning/jobs/{job_id}/events",
            "/v1/fine_tuning/jobs/{job_id}/checkpoints"}
V1_LISTS = V1_PAGED | {"/v1/models"}
# OpenAI's jobs-list filter (/v1 and /api/v1): `metadata[k]=v`.
JOB_METADATA_PARAMETER = OpenApiParameter(
    "metadata", {"type": "object", "additionalProperties": {"type": "string"}}, style="deepObject", explode=True,
    description="`metadata[k]=v` keeps the jobs whose metadata holds every given pair (`metadata=null`: jobs without "
                "metadata), as OpenAI's.",
)
V1_LIST_FILTERS = {
    "/v1/fine_tuning/jobs": [JOB_METADATA_PARAMETER],
    "/v1/files": [OpenApiParameter("order", str, enum=["asc", "desc"], description="By creation: `desc` by default."),
                  OpenApiParameter("purpose", str, description="Only files of this purpose (all are `fine-tune`).")],
}


class OpenAISchema(AutoSchema):
    """The /v1 views: request bodies from their serializers, JSON objects out (server-sent events too where the
    body takes `stream`), the raw bytes of a file's content."""

    def get_request_serializer(self):
        return getattr(self.view, "request_serializer", None)

    def get_response_serializers(self):
        if self.path.endswith("/content"):
            return {(200, "application/octet-stream"): OpenApiTypes.BINARY}
        responses = {200: OpenApiTypes.OBJECT}  # DELETE too: OpenAI answers `{"id", "object", "deleted"}`
        request_serializer = self.get_request_serializer()
        if request_serializer is not None and "stream" in request_serializer().fields:
            responses[(200, "text/event-stream")] = OpenApiTypes.STR
        return responses

    def get_override_parameters(self):
        if self.method == "GET" and self.path in V1_PAGED:
            page = [
                OpenApiParameter("after", str, description="The id of the last object of the previous page."),
                OpenApiParameter("limit", int, description="1 to 100 (20 by default)."),
            ]
            return page + V1_LIST_FILTERS.get(self.path, [])
        return super().get_override_parameters()

    def get_operation_id(self):
        # Plain APIViews all read as "retrieve": name list endpoints (no trailing {id}) as lists.
        operation_id = super().get_operation_id()
        if self.method == "GET" and self.path in V1_LISTS and operation_id.endswith("_retrieve"):
            operation_id = operation_id.removesuffix("_retrieve") + "_list"
        return operation_id


class WholeBodyOnPatch(OpenApiSerializerExtension):
    """Renaming a conversation is a PATCH whose body is validated whole: its one field, the title, is required
    (drf-spectacular makes every field of a PATCH body optional)."""

    target_class = "apps.api.serializers.ConversationInputSerializer"

    def map_serializer(self, auto_schema, direction):
        return auto_schema._map_serializer(self.target_class, direction, bypass_extensions=True)  # a new, whole one


class BearerKeyScheme(OpenApiAuthenticationExtension):
    target_class = "apps.api.authentication.BearerAPIKeyAuthentication"
    name = "bearer"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "An API key from the account page or `createapikey`."}

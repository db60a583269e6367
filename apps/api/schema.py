"""OpenAPI description of the /v1 views (plain APIViews): request bodies from their serializers, JSON objects out."""

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes


class OpenAISchema(AutoSchema):
    def get_request_serializer(self):
        return getattr(self.view, "request_serializer", None)

    def get_response_serializers(self):
        return OpenApiTypes.OBJECT

    def get_operation_id(self):
        # Plain APIViews all read as "retrieve": name list endpoints (no trailing {id}) as lists.
        operation_id = super().get_operation_id()
        if self.method == "GET" and not self.path.rstrip("/").endswith("}") and operation_id.endswith("_retrieve"):
            operation_id = operation_id.removesuffix("_retrieve") + "_list"
        return operation_id


from drf_spectacular.extensions import OpenApiAuthenticationExtension  # noqa: E402


class BearerKeyScheme(OpenApiAuthenticationExtension):
    target_class = "apps.api.authentication.BearerAPIKeyAuthentication"
    name = "bearer"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "An API key from the account page or `createapikey`."}

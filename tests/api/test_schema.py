import re

import pytest
import yaml
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema

pytestmark = pytest.mark.django_db


def test_schema_is_open_valid_and_covers_v1(client):
    response = client.get("/api/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    paths = set(schema["paths"])
    assert {"/v1/models", "/v1/models/{model_id}", "/v1/chat/completions", "/v1/completions", "/v1/files",
            "/v1/files/{file_id}", "/v1/files/{file_id}/content", "/v1/fine_tuning/jobs", "/v1/fine_tuning/jobs/{job_id}",
            "/v1/fine_tuning/jobs/{job_id}/events", "/v1/fine_tuning/jobs/{job_id}/checkpoints",
            "/v1/fine_tuning/jobs/{job_id}/cancel"} <= paths
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    body = schema["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("/ChatCompletionRequest")
    # The native API: typed answers, cursor pages, a key or the browser's session.
    apps = schema["paths"]["/api/v1/apps/"]["get"]
    assert apps["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/PaginatedAppList")
    assert {"q", "category", "kind", "mine", "cursor", "limit"} <= {p["name"] for p in apps["parameters"]}
    assert apps["security"] == [{"bearer": []}, {"cookieAuth": []}]
    assert "instructions" in schema["components"]["schemas"]["App"]["properties"]
    validate_schema(SchemaGenerator().get_schema(request=None, public=True))  # OpenAPI 3 schema validation


def test_swagger_ui_is_open_and_served_from_this_site(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html.lower()
    assert re.findall(r'(?:src|href)="(https?:)?//[^"]+"', html) == []  # assets from static/, no CDN
    scripts = re.findall(r'<script src="([^"]+)"', html)
    assert scripts and all(client.get(src).status_code == 200 for src in scripts)
    assert client.get("/").content.decode().count(">API docs</a>") == 1

"""A NUL byte in a path or query string is a 400 on every face, never a lookup (a 500 on PostgreSQL)."""

import pytest

from apps.accounts.services import api_key_create

pytestmark = pytest.mark.django_db

API = ["/v1/models/a%00b", "/v1/files/a%00b", "/v1/fine_tuning/jobs/a%00b/events", "/v1/files?after=a%00b",
       "/v1/fine_tuning/jobs?after=%00", "/api/v1/models/a%00b/", "/api/v1/jobs/?status=a%00b", "/api/v1/apps/?q=a%00b",
       "/api/v1/apps/?creator=%00", "/api/v1/runs/?app=a%00b", "/api/v1/conversations/?a%00b=1", "/api/v1/me/?x=%00"]
PAGES = ["/?q=a%00b", "/u/a%00b/", "/models/a%00b/", "/customize/files/a%00b/", "/customize/jobs/a%00b/"]


def test_api_answers_400_in_the_error_shape(client, user):
    _, key = api_key_create(user=user, name="nul")
    for url in API:
        response = client.get(url, HTTP_AUTHORIZATION=f"Bearer {key}")
        assert response.status_code == 400, url
        assert response.json()["error"]["code"] == "invalid_characters", url


def test_pages_answer_400(client, user):
    client.force_login(user)
    for url in PAGES:
        assert client.get(url).status_code == 400, url


def test_the_rest_is_untouched(client, user):
    client.force_login(user)
    assert client.get("/?q=a+b").status_code == 200
    assert client.get("/api/v1/me/?x=%01").status_code == 200

"""Request and token limits per key and per user: atomic under concurrent clients, OpenAI's headers and 429."""

import json
import threading

import pytest
from django.db import connection

from apps.accounts.limits import Quota, RateLimited, request_take, tokens_add
from apps.accounts.models import RateWindow
from apps.accounts.services import api_key_create

pytestmark = pytest.mark.django_db


def chat(client, key, **extra):
    body = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **extra}
    return client.post("/v1/chat/completions", data=json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}")


def test_headers_then_429_with_retry_after(client, store, user, settings):
    settings.RATE_LIMIT_KEY_REQUESTS = 2
    key = api_key_create(user=user, name="k")[1]
    first = chat(client, key)
    assert first.status_code == 200
    assert first["x-ratelimit-limit-requests"] == "2" and first["x-ratelimit-remaining-requests"] == "1"
    assert int(first["x-ratelimit-remaining-tokens"]) == settings.RATE_LIMIT_KEY_TOKENS
    assert chat(client, key).status_code == 200
    refused = chat(client, key)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded" and "API key" in error["message"]
    assert 1 <= int(refused["Retry-After"]) <= settings.RATE_LIMIT_WINDOW_SECONDS + 1
    assert refused["x-ratelimit-remaining-requests"] == "0"
    other_key = api_key_create(user=user, name="k2")[1]
    assert chat(client, other_key).status_code == 200  # another key of the same user has its own budget


def test_tokens_count_against_the_budget(client, store, user, settings):
    settings.RATE_LIMIT_USER_TOKENS = 30
    key = api_key_create(user=user, name="k")[1]
    assert chat(client, key).status_code == 200  # uses the whole token budget (prompt tokens included)
    refused = chat(client, key)
    assert refused.status_code == 429 and "tokens" in refused.json()["error"]["message"]
    assert "account" in refused.json()["error"]["message"]


def test_a_refused_request_is_not_counted_anywhere(user):
    quotas = [Quota("key:x", 5, 1000), Quota(f"user:{user.pk}", 1, 1000)]
    request_take(quotas=quotas)
    with pytest.raises(RateLimited):
        request_take(quotas=quotas)
    assert RateWindow.objects.get(scope="key:x").requests == 1


@pytest.mark.django_db(transaction=True)
def test_counters_hold_under_concurrent_clients(user):
    """20 threads, each with its own database connection, race for 7 requests: exactly 7 win."""
    quotas = [Quota("key:race", 7, 10_000)]
    wins, barrier = [], threading.Barrier(20)

    def client():
        barrier.wait()
        try:
            request_take(quotas=quotas)
            wins.append(1)
        except RateLimited:
            pass
        finally:
            connection.close()

    threads = [threading.Thread(target=client) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 7 and RateWindow.objects.get(scope="key:race").requests == 7
    tokens_add(quotas=quotas, tokens=12)
    assert RateWindow.objects.get(scope="key:race").tokens == 12

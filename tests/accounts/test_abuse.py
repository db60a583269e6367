"""Issue 11's attacks on accounts, each performed: a `next` that leads off the store, and sign-ups in bulk from one
address (new accounts as a way around the per-user limits)."""

from urllib.parse import urlencode

import pytest
from django.test import Client

from apps.accounts.models import User

pytestmark = pytest.mark.django_db
PASSWORD = "a-long-passphrase-42"
OFF_SITE = ["https://evil.example/", "//evil.example/", "/\\evil.example/", "http:evil.example", "javascript:alert(1)",
            "https://testserver.evil.example/", " https://evil.example/"]


def sign_up(client, name, query="", **extra):
    form = {"username": name, "email": f"{name}@example.com", "password1": PASSWORD, "password2": PASSWORD}
    return client.post(f"/accounts/signup/{query}", form, **extra)


def test_sign_up_never_sends_a_new_user_to_another_site(settings):
    settings.SIGNUP_PER_ADDRESS_PER_HOUR = 100
    for n, target in enumerate(OFF_SITE):
        client = Client()
        page = client.get("/accounts/signup/", {"next": target}).content.decode()
        assert 'type="hidden" name="next"' not in page and "/accounts/login/?next=" not in page  # not kept either
        response = sign_up(client, f"victim{n}", "?" + urlencode({"next": target}))
        assert response.status_code == 302 and response["Location"] == "/accounts/", target
    # The same with `next` in the form's body (the hidden field), and a path on the store is followed.
    client = Client()
    response = client.post("/accounts/signup/", {"username": "bodyvictim", "email": "b@example.com", "password1": PASSWORD,
                                                 "password2": PASSWORD, "next": "https://evil.example/"})
    assert response["Location"] == "/accounts/"
    client = Client()
    page = client.get("/accounts/signup/?next=/apps/chatbot/").content.decode()
    assert 'name="next" value="/apps/chatbot/"' in page and "/accounts/login/?next=/apps/chatbot/" in page
    assert sign_up(client, "follower", "?next=/apps/chatbot/")["Location"] == "/apps/chatbot/"


def test_login_logout_and_the_language_switch_never_lead_off_the_store(user):
    from tests.accounts.test_accounts import PASSWORD as USER_PASSWORD

    client = Client()
    for target in OFF_SITE:
        response = client.post("/accounts/login/?" + urlencode({"next": target}), {"username": user.username, "password": USER_PASSWORD})
        assert response["Location"] == "/accounts/", target
        response = client.post("/accounts/logout/", {"next": target})
        assert response["Location"] == "/", target
        response = client.post("/i18n/setlang/", {"language": "en", "next": target})
        assert response["Location"] == "/", target


def test_sign_ups_are_limited_per_address(settings):
    settings.SIGNUP_PER_ADDRESS_PER_HOUR = 2
    here = {"REMOTE_ADDR": "203.0.113.7"}
    for n in range(2):
        assert sign_up(Client(), f"bulk{n}", **here).status_code == 302
    # A form with errors counts for nothing.
    assert sign_up(Client(), "bulk0", **here).status_code == 200
    # The third account from the address is refused, on the page, and nothing is created; a forged
    # X-Forwarded-For (no trusted proxy) changes nothing.
    for extra in ({}, {"HTTP_X_FORWARDED_FOR": "198.51.100.9"}):
        refused = sign_up(Client(), "bulk2", **here, **extra)
        assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
        assert "Too many accounts were created from your network in the last hour." in refused.content.decode()
        assert '<form method="post"' in refused.content.decode()  # the form is still there, filled in
    assert not User.objects.filter(username="bulk2").exists() and User.objects.count() == 2
    # Another address may still sign up.
    assert sign_up(Client(), "elsewhere", REMOTE_ADDR="198.51.100.20").status_code == 302


def test_behind_a_trusted_proxy_the_forwarded_address_counts(settings):
    settings.SIGNUP_PER_ADDRESS_PER_HOUR = 1
    settings.TRUSTED_PROXIES = ["10.0.0.2"]
    proxy = {"REMOTE_ADDR": "10.0.0.2"}
    assert sign_up(Client(), "first", HTTP_X_FORWARDED_FOR="203.0.113.7", **proxy).status_code == 302
    assert sign_up(Client(), "second", HTTP_X_FORWARDED_FOR="203.0.113.7", **proxy).status_code == 429
    assert sign_up(Client(), "third", HTTP_X_FORWARDED_FOR="203.0.113.8", **proxy).status_code == 302


def test_the_refusal_speaks_the_user_s_language(settings):
    settings.SIGNUP_PER_ADDRESS_PER_HOUR = 0
    refused = sign_up(Client(HTTP_ACCEPT_LANGUAGE="zh-hans"), "chinese")
    assert refused.status_code == 429 and "过去一小时内从你的网络创建的账户过多" in refused.content.decode()

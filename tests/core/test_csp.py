"""The Content-Security-Policy (apps/core/csp.py): on every answer, and every page of the store runs under it as it
is, with no inline script, inline style or inline event handler (which it would block)."""

import re

import pytest
from django.http import HttpResponse
from django.test import RequestFactory

from apps.core.csp import NONCE, ContentSecurityPolicyMiddleware, policy_header
from apps.registry.services import model_version_register
from tests.catalog.conftest import make_app

pytestmark = pytest.mark.django_db

INLINE = [
    (r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", "an inline script"),
    (r"<style\b", "an inline style sheet"),
    (r"\sstyle=", "a style attribute"),
    (r"\son[a-z]+=", "an inline event handler"),
    (r"javascript:", "a javascript: URL"),
]


def directives(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {name: sources for name, *sources in (part.split() for part in header.split(";"))}


def assert_runs_under_the_policy(response, url):
    policy = directives(response)
    assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"], url
    assert policy["default-src"] == ["'self'"] and policy["frame-ancestors"] == ["'none'"], url
    assert policy["object-src"] == ["'none'"] and policy["img-src"] == ["'self'", "data:"], url
    html = response.content.decode()
    for pattern, what in INLINE:
        found = re.search(pattern, html)
        assert found is None, f"{url} has {what}: {html[max(0, found.start() - 80):found.end() + 80]}"


def test_every_page_runs_under_the_policy(client, store, user, tiny_hf_dir):
    mine = make_app(user, name="Policy Bot", visibility="link")
    generator = make_app(user, name="Policy Poems", kind="generator", prompt_template="A poem about {topic}.")
    fine_tune = f"ft:smollm2-135m-instruct:{user.slug}:csp:ftjob-csp1"
    model_version_register(name=fine_tune, source_dir=tiny_hf_dir, owner=user)
    anonymous = ["/", "/?q=translate", "/apps/chatbot/", "/apps/translator/", "/apps/text-generator/",
                 f"/apps/{generator.slug}/", f"/u/{user.username}/", "/category/writing/", "/accounts/signup/",
                 "/accounts/login/", "/accounts/password/reset/", "/terms/", "/privacy/", "/models/",
                 "/models/smollm2-135m-instruct/", "/models/smollm2-135m-instruct/v1/", "/no-such-page/"]
    signed_in = ["/", "/accounts/", "/build/", "/build/new/", f"/build/{mine.slug}/", f"/build/{generator.slug}/",
                 f"/apps/{mine.address}/", "/customize/", f"/models/{fine_tune}/v1/"]
    for url in anonymous:
        response = client.get(url)
        assert response.status_code in (200, 404), url
        assert_runs_under_the_policy(response, url)
    client.force_login(user)
    for url in signed_in:
        response = client.get(url)
        assert response.status_code == 200, url
        assert_runs_under_the_policy(response, url)


def test_an_owner_s_model_page_runs_under_the_policy(client, store, user, tiny_hf_dir):
    fine_tune = f"ft:smollm2-135m-instruct:{user.slug}:csp:ftjob-csp2"
    model_version_register(name=fine_tune, source_dir=tiny_hf_dir, owner=user)
    client.force_login(user)
    assert_runs_under_the_policy(client.get(f"/models/{fine_tune}/"), f"/models/{fine_tune}/")


def test_answers_that_are_not_pages_carry_the_policy_too(client, store):
    for url in ["/healthz", "/api/schema/", "/static/js/store.js", "/jsi18n/"]:
        assert directives(client.get(url))["script-src"] == ["'self'"], url


def test_the_swagger_ui_s_inline_set_up_runs_by_its_nonce_alone(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    nonce = re.search(r"'nonce-([A-Za-z0-9_-]{22})'", response["Content-Security-Policy"]).group(1)
    assert directives(response)["script-src"] == ["'self'", f"'nonce-{nonce}'"]
    html = response.content.decode()
    inline = re.findall(r"<(script|style)(?![^>]*\bsrc=)([^>]*)>", html)
    assert inline and all(f'nonce="{nonce}"' in attributes for _, attributes in inline)
    assert nonce not in client.get("/api/docs/")["Content-Security-Policy"]  # a new one for each answer
    assert "'unsafe-inline'" not in response["Content-Security-Policy"]


def test_the_nonce_is_left_out_where_no_page_used_it_and_a_view_s_own_policy_stays():
    policy = {"script-src": ["'self'", NONCE], "frame-ancestors": ["'none'"]}
    assert policy_header(policy, None) == "script-src 'self'; frame-ancestors 'none'"
    assert policy_header(policy, "abc") == "script-src 'self' 'nonce-abc'; frame-ancestors 'none'"

    def own_policy(request):
        response = HttpResponse("framed on purpose")
        response["Content-Security-Policy"] = "frame-ancestors 'self'"
        return response

    response = ContentSecurityPolicyMiddleware(own_policy)(RequestFactory().get("/"))
    assert response["Content-Security-Policy"] == "frame-ancestors 'self'"

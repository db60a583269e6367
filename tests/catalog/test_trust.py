"""Issue 11's attacks on the catalog, each performed: remix must not hand out an app's private instructions or its
creator's private model, and a link-only app must not be reachable at a guessable address."""

import importlib
import json

import pytest
from django.apps import apps as django_apps
from django.test import Client

from apps.accounts.services import api_key_create
from apps.catalog.models import LINK_TOKEN_LENGTH, StoreApp, default_model_reference
from apps.catalog.services import app_publish, app_update, app_version_restore
from apps.registry.services import model_version_register
from tests.catalog.conftest import make_app, run

pytestmark = pytest.mark.django_db
SECRET = "SECRET-INSTRUCTIONS"


def api(user) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {api_key_create(user=user, name='k')[1]}")


def as_json(client: Client, method: str, url: str, body=None):
    kwargs = {"data": json.dumps(body), "content_type": "application/json"} if body is not None else {}
    return getattr(client, method)(url, **kwargs)


def haiku_generator(user, **overrides):
    return make_app(user, name="Haiku Maker", kind="generator",
                    prompt_template="SECRET-TEMPLATE: write a haiku about {topic} in the mood {mood}.", **overrides)


# --- Remix -------------------------------------------------------------------------------------------------------
def test_a_remix_copies_what_the_public_sees_and_never_the_instructions(client, store, user, other_user):
    chatbot, generator = make_app(user), haiku_generator(user)
    client.force_login(other_user)
    for app in (chatbot, generator):
        response = client.post(f"/apps/{app.address}/remix", follow=True)
        copy = StoreApp.objects.get(creator=other_user, remixed_from=app)
        assert response.redirect_chain[-1][0] == f"/build/{copy.slug}/"
        # The copy has the public parts ...
        for field in ("short_description", "description", "kind", "conversation_starters", "model_reference",
                      "temperature", "top_p", "max_tokens", "repetition_penalty", "input_fields"):
            assert getattr(copy, field) == getattr(app, field), field
        assert copy.name == f"{app.name} (remix)" and copy.visibility == "private" and not copy.remix_with_instructions
        # ... and nothing of what the creator keeps: not in the row, the builder or the API.
        assert copy.instructions == "" and "SECRET" not in copy.prompt_template
        builder = response.content.decode()
        assert "SECRET" not in builder and "write your own" in builder
        detail = api(other_user).get(f"/api/v1/apps/{copy.slug}/").json()
        assert detail["instructions"] == "" and "SECRET" not in detail["prompt_template"]
    # The generator's copy still works: its template is its public form, one line per field.
    copy = StoreApp.objects.get(creator=other_user, kind="generator")
    assert copy.prompt_template == "Topic: {topic}\nMood: {mood}"
    status, events = run(client, copy.slug, {"fields": {"topic": "rain", "mood": "calm"}}, url=f"/build/{copy.slug}/preview")
    assert status == 200 and events[-1]["done"]


def test_the_api_remix_leaks_nothing_either(store, user, other_user):
    app = make_app(user)
    response = api(other_user).post(f"/api/v1/apps/{app.slug}/remix/")
    assert response.status_code == 201
    assert response.json()["instructions"] == "" and SECRET not in response.content.decode()


def test_the_creator_may_allow_remixing_with_instructions(client, store, user, other_user):
    chatbot = make_app(user)
    client.force_login(user)
    form = {"name": chatbot.name, "short_description": chatbot.short_description, "kind": "chatbot",
            "instructions": chatbot.instructions, "model_reference": chatbot.model_reference, "temperature": 0,
            "top_p": 0.9, "max_tokens": 8, "repetition_penalty": 1.1, "remix_with_instructions": "on"}
    assert "Allow remixing with instructions" in client.get(f"/build/{chatbot.slug}/").content.decode()
    assert client.post(f"/build/{chatbot.slug}/", form).status_code == 302
    generator = haiku_generator(user)
    patched = as_json(api(user), "patch", f"/api/v1/apps/{generator.slug}/", {"remix_with_instructions": True})
    assert patched.status_code == 200 and patched.json()["remix_with_instructions"] is True
    for app in (chatbot, generator):
        copy = api(other_user).post(f"/api/v1/apps/{app.slug}/remix/").json()
        original = StoreApp.objects.get(pk=app.pk)
        assert original.remix_with_instructions
        assert (copy["instructions"], copy["prompt_template"]) == (original.instructions, original.prompt_template)
        assert copy["remix_with_instructions"] is False  # the copy's own choice, off until its new creator ticks it


def test_a_remix_of_an_app_on_its_creator_s_private_fine_tune_runs_on_the_base_model(client, store, user, other_user,
                                                                                  tiny_hf_dir):
    fine_tune = f"ft:smollm2-135m-instruct:{user.slug}:pirate:ftjob-pirate1"
    model_version_register(name=fine_tune, source_dir=tiny_hf_dir, owner=user)
    app = make_app(user, model_reference=f"{fine_tune}@latest")
    client.force_login(other_user)
    page = client.post(f"/apps/{app.address}/remix", follow=True).content.decode()
    copy = StoreApp.objects.get(creator=other_user)
    assert copy.model_reference == default_model_reference()
    notice = "runs on the base model smollm2-135m-instruct@latest instead"
    assert notice in page and notice in copy.description and app.description in copy.description
    assert fine_tune not in copy.description
    status, events = run(client, copy.slug, {"message": "Ahoy?"}, url=f"/build/{copy.slug}/preview")
    assert status == 200 and events[-1]["done"]  # the copy runs
    from_api = api(other_user).post(f"/api/v1/apps/{app.slug}/remix/").json()
    assert from_api["model"] == default_model_reference() and notice in from_api["description"]
    # The creator's own remix keeps their model (they may use it).
    assert api(user).post(f"/api/v1/apps/{app.slug}/remix/").json()["model"] == f"{fine_tune}@latest"


def test_a_remix_of_a_link_only_app_is_forbidden(client, store, user, other_user):
    app = make_app(user, visibility="link")
    client.force_login(other_user)
    page = client.post(f"/apps/{app.address}/remix")
    assert page.status_code == 403 and "Only public apps can be remixed." in page.content.decode()
    response = api(other_user).post(f"/api/v1/apps/{app.address}/remix/")
    assert response.status_code == 403 and response.json()["error"]["code"] == "remix_not_allowed"
    assert not StoreApp.objects.filter(creator=other_user).exists()
    assert api(user).post(f"/api/v1/apps/{app.slug}/remix/").status_code == 201  # its creator may


# --- Link-only apps --------------------------------------------------------------------------------------------
def test_a_link_only_app_is_reached_only_at_its_token_address(client, store, user, other_user):
    app = make_app(user, visibility="link")
    token = app.link_token
    assert len(token) == LINK_TOKEN_LENGTH and app.address == f"{app.slug}-{token}"
    assert app.get_absolute_url() == f"/apps/{app.address}/"
    wrong = f"{app.slug}-{'A' * LINK_TOKEN_LENGTH}"
    key = api_key_create(user=other_user, name="k")[1]
    auth = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    visitor = Client()
    client.force_login(other_user)
    for who in (client, visitor):  # another user, a visitor
        for guess in (app.slug, wrong):
            assert who.get(f"/apps/{guess}/").status_code == 404
            assert run(who, guess, {"message": "hi"})[0] == 404
        assert who.get(f"/apps/{app.address}/").status_code == 200
    status, events = run(client, app.address, {"message": "Ahoy?"})
    assert status == 200 and events[-1]["done"]
    html = client.get(f"/apps/{app.address}/").content.decode()  # the page's forms and runner use the token address
    assert f"/apps/{app.address}/run" in html and f"/apps/{app.address}/review" in html and f"/apps/{app.address}/report" in html
    # /api/v1: the same rule; what the API answers names the token address.
    for guess in (app.slug, wrong):
        assert client.get(f"/api/v1/apps/{guess}/", **auth).status_code == 404
    detail = client.get(f"/api/v1/apps/{app.address}/", **auth).json()
    assert detail["url"] == f"http://testserver/apps/{app.address}/" and detail["model_id"] == f"app:{app.address}"
    # /v1: `app:<address>`; never listed in /v1/models.
    for guess, expected in ((app.slug, 404), (wrong, 404), (app.address, 200)):
        response = client.post("/v1/chat/completions", data=json.dumps({"model": f"app:{guess}", **chat}),
                               content_type="application/json", **auth)
        assert response.status_code == expected, guess
    ids = {m["id"] for m in client.get("/v1/models", **auth).json()["data"]}
    assert "app:chatbot" in ids and not any(app.slug in i for i in ids)
    # The creator: both addresses, and the builder gives the token address to share.
    client.force_login(user)
    assert client.get(f"/apps/{app.slug}/").status_code == client.get(f"/apps/{app.address}/").status_code == 200
    builder = client.get(f"/build/{app.slug}/").content.decode()
    assert f'value="http://testserver/apps/{app.address}/"' in builder and "Copy link" in builder


def test_a_token_is_kept_while_public_and_revoked_by_private(client, store, user, other_user):
    app = make_app(user, visibility="link")
    first = app.address
    client.force_login(other_user)
    app_publish(app=app, user=user, visibility="public")
    assert app.address == app.slug and client.get(f"/apps/{first}/").status_code == 200  # links shared before work
    app_publish(app=app, user=user, visibility="link")
    assert app.address == first  # back to link-only: the same link
    app_publish(app=app, user=user, visibility="private")
    assert app.link_token is None and client.get(f"/apps/{first}/").status_code == 404
    app_publish(app=app, user=user, visibility="link")
    assert app.address != first and client.get(f"/apps/{app.address}/").status_code == 200
    assert client.get(f"/apps/{first}/").status_code == 404  # the old link stays revoked


def test_restoring_a_link_only_version_gives_the_app_a_token(store, user):
    app = make_app(user, visibility="link")
    app_update(app=app, user=user, data={"name": app.name, "short_description": "changed", "kind": "chatbot"})
    app_publish(app=app, user=user, visibility="private")
    number = app.versions.first().number  # saved while link-only
    app = app_version_restore(app=app, user=user, number=number)
    assert app.visibility == "link" and len(app.link_token) == LINK_TOKEN_LENGTH


def test_the_migration_gives_existing_link_only_apps_a_token(store, user):
    app = make_app(user, visibility="link")
    public = make_app(user, name="Open")
    StoreApp.objects.filter(pk=app.pk).update(link_token=None)  # as before the migration
    migration = importlib.import_module("apps.catalog.migrations.0004_remix_with_instructions_and_link_token")
    migration.link_tokens_give(django_apps, None)
    app.refresh_from_db()
    public.refresh_from_db()
    assert len(app.link_token) == LINK_TOKEN_LENGTH and public.link_token is None

"""Who may use or change an app: one helper per outcome (apps.catalog.access), the same answer on every face.

Another user's private app or draft is a 404 everywhere; an app the caller sees but does not own is a 403 for
anything that changes it, on the builder pages and in /api/v1 alike."""

import json

import pytest
from django.contrib.auth.models import AnonymousUser
from django.test import Client

from apps.accounts.services import api_key_create
from apps.catalog.access import access_app, access_app_owned
from apps.catalog.models import StoreApp
from apps.core.errors import Forbidden, NotFound
from tests.catalog.conftest import make_app

pytestmark = pytest.mark.django_db


@pytest.fixture
def apps(store, user):
    unlisted = make_app(user, name="Unlisted One")
    StoreApp.objects.filter(pk=unlisted.pk).update(is_listed=False)  # a moderator took it down
    return {  # each app's address: a link-only app's holds its token
        "public": make_app(user, name="Public One").address,
        "link": make_app(user, name="Link One", visibility="link").address,
        "private": make_app(user, name="Private One", visibility="private").address,
        "draft": make_app(user, name="Draft One", visibility=None).address,
        "unlisted": unlisted.address,
    }


def test_the_creator_may_use_and_change_each_of_their_apps(apps, user):
    for address in apps.values():
        assert access_app(user=user, slug=address).address == address
        assert access_app_owned(user=user, slug=address).address == address
    link = StoreApp.objects.get(name="Link One")
    assert apps["link"] == f"link-one-{link.link_token}"
    assert access_app(user=user, slug="link-one") == link  # the creator also at the plain slug


@pytest.mark.parametrize("caller", ["other", "anonymous", "none"])
def test_others_see_what_is_shared_and_change_nothing(apps, other_user, caller):
    who = {"other": other_user, "anonymous": AnonymousUser(), "none": None}[caller]
    for kind in ["public", "link"]:
        assert access_app(user=who, slug=apps[kind]).address == apps[kind]
        with pytest.raises(Forbidden) as refused:
            access_app_owned(user=who, slug=apps[kind])
        assert (refused.value.status, refused.value.code) == (403, "not_owner")
    for kind in ["private", "draft", "unlisted"]:
        for access in (access_app, access_app_owned):
            with pytest.raises(NotFound) as hidden:
                access(user=who, slug=apps[kind])
            assert (hidden.value.status, hidden.value.code) == (404, "app_not_found")
    with pytest.raises(NotFound):  # a link-only app's plain slug is guessable: others get nothing there
        access_app(user=who, slug="link-one")


def test_built_in_apps_are_everyone_s_to_use_and_nobody_s_to_change(store, user):
    for who in [user, AnonymousUser(), None]:
        assert access_app(user=who, slug="chatbot").is_builtin
        with pytest.raises(Forbidden):
            access_app_owned(user=who, slug="chatbot")
    with pytest.raises(NotFound):
        access_app(user=user, slug="no-such-app")


def _acts(slug):
    """The same act on the builder pages and in /api/v1: (name, page request, API request)."""
    return [
        ("edit", ("post", f"/build/{slug}/", {"name": "Mine now"}), ("patch", f"/api/v1/apps/{slug}/", {"name": "Mine now"})),
        ("publish", ("post", f"/build/{slug}/publish", {"visibility": "public"}),
         ("post", f"/api/v1/apps/{slug}/publish/", {"visibility": "public"})),
        ("restore", ("post", f"/build/{slug}/restore/1", {}), ("post", f"/api/v1/apps/{slug}/versions/1/restore/", {})),
        ("delete", ("post", f"/build/{slug}/delete", {}), ("delete", f"/api/v1/apps/{slug}/", None)),
    ]


@pytest.mark.parametrize("kind, expected", [("public", 403), ("link", 403), ("private", 404), ("draft", 404)])
def test_a_non_owner_gets_the_same_answer_on_a_page_and_in_the_api(apps, user, other_user, kind, expected):
    slug = apps[kind]
    pk = access_app(user=user, slug=slug).pk
    before = StoreApp.objects.values().get(pk=pk)
    page = Client()
    page.force_login(other_user)
    api = Client(HTTP_AUTHORIZATION=f"Bearer {api_key_create(user=other_user, name='theirs')[1]}")
    for act, (method, url, form), (api_method, api_url, body) in _acts(slug):
        on_page = getattr(page, method)(url, form)
        in_api = getattr(api, api_method)(api_url, **({"data": json.dumps(body), "content_type": "application/json"}
                                                       if body is not None else {}))
        assert on_page.status_code == in_api.status_code == expected, (act, on_page.status_code, in_api.status_code)
        if expected == 403:
            assert "Only the app&#x27;s creator can change it." in on_page.content.decode(), act  # a page for people
            assert in_api.json()["error"]["code"] == "not_owner", act
    assert page.get(f"/build/{slug}/").status_code == expected
    assert page.post(f"/build/{slug}/preview", data="{}", content_type="application/json").status_code == expected
    assert StoreApp.objects.values().get(pk=pk) == before  # nothing changed


def test_the_forbidden_page_speaks_the_user_s_language(apps, other_user):
    page = Client(HTTP_ACCEPT_LANGUAGE="zh-hans")
    page.force_login(other_user)
    response = page.post(f"/build/{apps['public']}/delete")
    assert response.status_code == 403
    assert "Only the app&#x27;s creator can change it." not in response.content.decode()

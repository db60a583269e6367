"""The store's catalog: seeding, the home page, search, visibility, reviews, reports, remix, the builder."""

import pytest
from django.contrib.admin.sites import site as admin_site
from django.core.management import call_command

from apps.catalog.models import AppVersion, Report, Review, StoreApp
from apps.catalog.selectors import conversation_count_label
from tests.catalog.conftest import make_app, run

pytestmark = pytest.mark.django_db


def test_seed_creates_the_three_builtin_apps_once(store, capsys):
    call_command("seed_store")
    assert "already seeded" in capsys.readouterr().out
    builtins = StoreApp.objects.filter(is_builtin=True).order_by("slug")
    assert [a.slug for a in builtins] == ["chatbot", "text-generator", "translator"]
    for app in builtins:
        assert app.creator is None and app.visibility == "public" and app.published_at is not None
        assert app.model_reference == "smollm2-135m-instruct@latest"
    assert AppVersion.objects.filter(app__is_builtin=True).count() == 3


def test_seed_brings_an_older_builtin_to_builtin_py(store):
    from apps.catalog.builtin import BUILTIN_APPS
    from apps.catalog.services import store_seed

    spec = next(s for s in BUILTIN_APPS if s["slug"] == "text-generator")
    StoreApp.objects.filter(slug="text-generator").update(repetition_penalty=1.1, instructions="Old instructions.")
    store_seed()
    app = StoreApp.objects.get(slug="text-generator")
    assert app.repetition_penalty == spec["repetition_penalty"] and app.instructions == spec["instructions"]
    assert [v.number for v in app.versions.order_by("number")] == [1, 2]
    assert app.versions.get(number=2).settings["repetition_penalty"] == spec["repetition_penalty"]
    store_seed()  # nothing left to change: no new version
    assert app.versions.count() == 2


def test_home_shows_sections_and_categories(client, store, user):
    app = make_app(user, name="Sea Shanty Writer")
    Review.objects.create(app=app, user=__import__("tests.factories", fromlist=["UserFactory"]).UserFactory(), rating=5, text="great")
    html = client.get("/").content.decode()
    for text in ["Featured", "Top rated", "New", "Chatbot", "Translator", "Text Generator", "Sea Shanty Writer", "Language"]:
        assert text in html, text


def test_trending_counts_runs_of_the_last_seven_days(client, store):
    status, events = run(client, "translator", {"text": "Hello", "source": "English", "target": "French"})
    assert status == 200 and events[-1]["done"]
    html = client.get("/").content.decode()
    assert "Trending this week" in html


@pytest.mark.parametrize("query", ["pirate", "sailors", "Productivity", "PIRATE helper"])
def test_search_finds_by_name_description_and_category(client, store, user, query):
    from apps.catalog.models import Category

    make_app(user, category=Category.objects.get(slug="productivity"))
    html = client.get("/", {"q": query}).content.decode()
    assert "Pirate Helper" in html


def test_search_without_a_match_says_so(client, store):
    assert "No app matches your search" in client.get("/", {"q": "zebra-quantum"}).content.decode()


def test_private_app_is_invisible_to_others_everywhere(client, store, user, other_user):
    app = make_app(user, visibility="private")
    assert app.published_at is not None
    client.force_login(other_user)
    assert client.get(f"/apps/{app.slug}/").status_code == 404
    assert run(client, app.slug, {"message": "hi"})[0] == 404
    assert "Pirate Helper" not in client.get("/", {"q": "pirate"}).content.decode()
    assert "Pirate Helper" not in client.get("/").content.decode()
    assert "Pirate Helper" not in client.get(f"/u/{user.username}/").content.decode()
    assert client.get(f"/build/{app.slug}/").status_code == 404
    assert client.post(f"/build/{app.slug}/publish", {"visibility": "public"}).status_code == 404
    assert client.post(f"/build/{app.slug}/preview", data="{}", content_type="application/json").status_code == 404
    client.logout()
    assert client.get(f"/apps/{app.slug}/").status_code == 404
    client.force_login(user)
    assert client.get(f"/apps/{app.slug}/").status_code == 200


def test_a_draft_is_visible_to_its_creator_only(client, store, user, other_user):
    app = make_app(user, visibility=None)
    client.force_login(other_user)
    assert client.get(f"/apps/{app.slug}/").status_code == 404


def test_link_only_app_opens_by_url_but_is_not_listed(client, store, user, other_user):
    app = make_app(user, visibility="link")
    client.force_login(other_user)
    assert client.get(f"/apps/{app.address}/").status_code == 200
    assert client.get(f"/apps/{app.slug}/").status_code == 404  # the guessable slug alone opens nothing
    assert "Pirate Helper" not in client.get("/", {"q": "pirate"}).content.decode()
    assert "Pirate Helper" not in client.get("/").content.decode()


def test_instructions_never_reach_the_browser(client, store, user, other_user):
    app = make_app(user)
    client.force_login(other_user)
    html = client.get(f"/apps/{app.slug}/").content.decode()
    assert "SECRET-INSTRUCTIONS" not in html
    status, events = run(client, app.slug, {"message": "Ahoy?"})
    assert status == 200 and "SECRET-INSTRUCTIONS" not in str(events)
    conversation = events[-1]["conversation"]
    body = client.get(f"/conversations/{conversation}/").content.decode()
    assert "SECRET-INSTRUCTIONS" not in body
    chatbot = client.get("/apps/chatbot/").content.decode()
    assert "You are a helpful, friendly assistant" not in chatbot


def test_user_text_is_escaped_in_every_page(client, store, user, other_user):
    evil = "<script>alert(1)</script>"
    app = make_app(user, name=f"X {evil}", short_description=evil, description=evil, conversation_starters=[evil])
    client.force_login(other_user)
    client.post(f"/apps/{app.slug}/review", {"rating": 4, "text": evil})
    for url in [f"/apps/{app.slug}/", "/", f"/u/{user.username}/", "/?q=X"]:
        html = client.get(url).content.decode()
        assert evil not in html, url
        assert "&lt;script&gt;" in html, url


def test_reviews_one_per_user_editable_and_averaged(client, store, user, other_user):
    from tests.factories import UserFactory

    app = make_app(user)
    client.force_login(other_user)
    client.post(f"/apps/{app.slug}/review", {"rating": 2, "text": "meh"})
    client.post(f"/apps/{app.slug}/review", {"rating": 4, "text": "better now"})
    assert Review.objects.filter(app=app).count() == 1
    assert Review.objects.get(app=app).rating == 4
    client.force_login(UserFactory())
    client.post(f"/apps/{app.slug}/review", {"rating": 5, "text": ""})
    html = client.get(f"/apps/{app.slug}/").content.decode()
    assert "★ 4.5 (2 reviews)" in html and "better now" in html
    response = client.post(f"/apps/{app.slug}/review", {"rating": 9})
    assert response.status_code == 302 and Review.objects.filter(app=app).count() == 2
    client.force_login(user)
    client.post(f"/apps/{app.slug}/review", {"rating": 5})
    assert not Review.objects.filter(app=app, user=user).exists()  # no rating one's own app


def test_report_and_admin_unlist(client, store, user, other_user, admin_client):
    app = make_app(user)
    client.force_login(other_user)
    client.post(f"/apps/{app.slug}/report", {"reason": "spam", "details": "ads everywhere"})
    report = Report.objects.get(app=app)
    assert report.reason == "spam" and report.user == other_user
    assert admin_client.get("/admin/catalog/report/").status_code == 200
    response = admin_client.post(
        "/admin/catalog/storeapp/", {"action": "unlist", "_selected_action": [app.pk]}
    )
    assert response.status_code == 302
    app.refresh_from_db()
    assert not app.is_listed
    assert client.get(f"/apps/{app.slug}/").status_code == 404
    assert "Pirate Helper" not in client.get("/", {"q": "pirate"}).content.decode()


def test_remix_copies_a_public_app_into_a_private_draft(client, store, user, other_user):
    app = make_app(user)
    client.force_login(other_user)
    response = client.post(f"/apps/{app.slug}/remix")
    copy = StoreApp.objects.get(creator=other_user)
    assert response["Location"] == f"/build/{copy.slug}/"
    assert copy.visibility == "private" and copy.remixed_from == app
    assert copy.instructions == "" and "SECRET-INSTRUCTIONS" not in client.get(response["Location"]).content.decode()


def test_creator_page_lists_public_apps(client, store, user):
    make_app(user)
    make_app(user, name="Hidden one", visibility="private")
    html = client.get(f"/u/{user.username}/").content.decode()
    assert "Pirate Helper" in html and "Hidden one" not in html


def test_category_page_and_pagination(client, store, user):
    from apps.catalog.models import Category

    fun = Category.objects.get(slug="fun")
    for i in range(14):
        make_app(user, name=f"Fun app {i:02}", category=fun)
    first = client.get("/category/fun/").content.decode()
    assert first.count('class="card app-card"') == 12 and "Page 1 of 2" in first
    assert client.get("/category/fun/", {"page": 2}).content.decode().count('class="card app-card"') == 2
    assert client.get("/category/nope/").status_code == 404


@pytest.mark.parametrize("count, label", [(0, "0"), (9, "9"), (10, "10+"), (999, "100+"), (1000, "1K+"), (25_000, "10K+")])
def test_conversation_count_buckets(count, label):
    assert conversation_count_label(count) == label


def test_admin_lists_apps(admin_client, store):
    assert admin_client.get("/admin/catalog/storeapp/").status_code == 200
    assert StoreApp in admin_site._registry

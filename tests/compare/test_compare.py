"""/compare/: two models or two apps answer one prompt, both through the run service; votes feed the leaderboard;
everything is the owner's alone (pages and /api/v1)."""

import json

import pytest
from django.conf import settings

from apps.chat.models import AppRun
from apps.compare.models import Answer, Comparison, Vote
from apps.compare.rating import INITIAL
from apps.compare.selectors import leaderboard
from apps.registry.services import model_version_register
from tests.catalog.conftest import make_app, run

pytestmark = pytest.mark.django_db

BASE = f"{settings.BASE_MODEL_ID}@latest"


@pytest.fixture
def fine_tune(store, user, tiny_hf_dir):
    name = f"ft:{settings.BASE_MODEL_ID}:{user.slug}:poet:ftjob-abc"
    model_version_register(name=name, source_dir=tiny_hf_dir, owner=user)
    return name


def start(client, **body):
    body = {"a": BASE, "prompt": "Say hello.", "max_tokens": 4, "temperature": 0, **body}
    response = client.post("/compare/start", data=json.dumps(body), content_type="application/json")
    return response.status_code, response.json()


def vote(client, comparison_id, outcome):
    response = client.post(f"/compare/{comparison_id}/vote", data=json.dumps({"outcome": outcome}), content_type="application/json")
    return response.status_code, response.json()


def test_two_models_answer_and_a_vote_rates_them(client, user, fine_tune):
    client.force_login(user)
    page = client.get("/compare/").content.decode()
    assert BASE in page and f"{fine_tune}@latest" in page and 'href="/compare/"' in page  # the picker and the nav link

    status, body = start(client, b=f"{fine_tune}@latest")
    assert status == 201 and body["kind"] == "model"
    a, b = body["answers"]
    assert (a["label"], b["label"]) == (f"{settings.BASE_MODEL_ID}@v1", f"{fine_tune}@v1")  # pinned to a version
    assert a["settings"] == {"model": a["label"], "temperature": 0.0, "max_tokens": 4}

    status, events_a = run(client, None, {}, url=a["runUrl"])
    assert status == 200 and any("delta" in e for e in events_a) and events_a[-1]["done"]
    assert vote(client, body["id"], "a")[0] == 409  # B has not answered yet
    assert run(client, None, {}, url=a["runUrl"])[0] == 409  # a side answers once
    status, events = run(client, None, {}, url=b["runUrl"])
    assert status == 200 and events[-1]["done"]

    # Both runs went through the run service: usage rows, the user's quotas.
    assert AppRun.objects.filter(user=user, app=None).count() == 2
    answers = Answer.objects.filter(comparison_id=body["id"])
    assert all(x.finished_at and x.finish_reason for x in answers)
    assert answers.get(side="a").text == "".join(e.get("delta", "") for e in events_a)  # the answer as it streamed

    status, result = vote(client, body["id"], "b")
    assert status == 200 and result["vote"]["outcome"] == "b"
    board = {row["entry"]: row["rating"] for row in result["leaderboard"]}
    assert board[f"{fine_tune}@v1"] == INITIAL + 16 and board[f"{settings.BASE_MODEL_ID}@v1"] == INITIAL - 16
    assert vote(client, body["id"], "a")[0] == 409  # one vote per comparison
    assert "1016.0" in client.get("/compare/leaderboard/").content.decode()


@pytest.mark.parametrize("body, status, param", [
    ({"prompt": "   "}, 400, "prompt"),
    ({"b": "no-such-model@latest"}, 404, "b"),
    ({"b": "app:chatbot"}, 400, "b"),  # a model against an app
    ({"b": f"{settings.BASE_MODEL_ID}@v1"}, 400, "b"),  # the same version twice
    ({"b": "ft-x", "temperature": "hot"}, 400, "temperature"),
    ({"b": "ft-x", "max_tokens": 5000}, 400, "max_tokens"),
    ({"a": "app:chatbot", "b": "app:translator"}, 400, "b"),  # two kinds of app
    ({"a": "app:chatbot", "b": "app:no-such-app"}, 404, "b"),
    ({"b": "x", "messages": [{"role": "assistant", "content": "Hi"}]}, 400, "messages"),
])
def test_bad_input_is_a_readable_error(client, user, store, body, status, param):
    client.force_login(user)
    got, answer = start(client, **{"b": "x", **body})
    assert got == status and answer["error"]["param"] == param and answer["error"]["message"]
    assert not Comparison.objects.exists()
    response = client.post("/compare/start", data="not json", content_type="application/json")
    assert response.status_code == 400 and response.json()["error"]["message"]


def test_another_users_models_and_private_apps_cannot_be_compared(client, user, other_user, fine_tune):
    secret = make_app(user, name="Hidden", visibility="private")
    client.force_login(other_user)
    assert start(client, b=f"{fine_tune}@latest")[0] == 404
    assert start(client, a="app:chatbot", b=f"app:{secret.slug}")[0] == 404
    assert f"{fine_tune}" not in client.get("/compare/").content.decode()


def test_two_apps_show_public_settings_never_another_creators_instructions(client, user, other_user, store):
    pirate = make_app(other_user, name="Pirate Helper")  # public, instructions "SECRET-INSTRUCTIONS: ..."
    client.force_login(user)
    status, body = start(client, a="app:chatbot", b=f"app:{pirate.slug}")
    assert status == 201 and body["kind"] == "chatbot"
    settings_b = body["answers"][1]["settings"]
    assert settings_b["app"] == "Pirate Helper" and settings_b["creator"] == other_user.username
    assert settings_b["temperature"] == 0.0 and settings_b["max_tokens"] == 8
    for answer in body["answers"]:
        status, events = run(client, None, {}, url=answer["runUrl"])
        assert status == 200 and events[-1]["done"]
    assert AppRun.objects.filter(user=user, app=pirate).count() == 1
    api = client.get(f"/api/v1/comparisons/{body['id']}/").content.decode()
    page = client.get("/compare/").content.decode()
    for text in (json.dumps(body), api, page):
        assert "SECRET-INSTRUCTIONS" not in text


def finished_comparison(owner):
    comparison = Comparison.objects.create(owner=owner, kind="model", messages=[{"role": "user", "content": "Hi"}],
                                           options={"temperature": 0, "max_tokens": 4})
    for side, entry in (("a", "m@v1"), ("b", "m@v2")):
        Answer.objects.create(comparison=comparison, side=side, entry=entry, reference=entry, label=entry, text="Hello",
                              finish_reason="stop", started_at="2026-01-01T00:00Z", finished_at="2026-01-01T00:00Z")
    return comparison


def test_another_user_can_neither_read_nor_vote_on_a_comparison(client, user, other_user, store):
    comparison = finished_comparison(user)
    client.force_login(other_user)
    assert vote(client, comparison.pk, "a")[0] == 404
    assert run(client, None, {}, url=f"/compare/{comparison.pk}/run/a")[0] == 404
    assert client.get(f"/api/v1/comparisons/{comparison.pk}/").status_code == 404
    response = client.post("/api/v1/votes/", data={"comparison": comparison.pk, "outcome": "a"}, content_type="application/json")
    assert response.status_code == 404
    assert client.get("/api/v1/comparisons/").json()["results"] == []
    assert not Vote.objects.exists()
    client.logout()
    assert client.get("/compare/").status_code == 302  # signed-in users only


def test_the_api_lists_votes_creates_one_and_gives_the_leaderboard(client, user, store):
    first, second = finished_comparison(user), finished_comparison(user)
    client.force_login(user)
    response = client.post("/api/v1/votes/", data={"comparison": first.pk, "outcome": "a"}, content_type="application/json")
    assert response.status_code == 201 and response.json()["a"] == "m@v1"
    response = client.post("/api/v1/votes/", data={"comparison": first.pk, "outcome": "b"}, content_type="application/json")
    assert response.status_code == 409 and response.json()["error"]["code"] == "already_voted"
    response = client.post("/api/v1/votes/", data={"comparison": second.pk, "outcome": "maybe"}, content_type="application/json")
    assert response.status_code == 400
    client.post("/api/v1/votes/", data={"comparison": second.pk, "outcome": "tie"}, content_type="application/json")
    assert [v["outcome"] for v in client.get("/api/v1/votes/").json()["results"]] == ["tie", "a"]
    rows = client.get("/api/v1/leaderboard/").json()["results"]
    assert [r["entry"] for r in rows] == ["m@v1", "m@v2"] and rows[0]["wins"] == 1 and rows[0]["ties"] == 1
    assert rows[0]["rating"] > INITIAL > rows[1]["rating"]


def test_the_leaderboard_applies_votes_in_the_order_they_were_cast(user, store):
    first, second = finished_comparison(user), finished_comparison(user)
    later = Vote.objects.create(comparison=first, voter=user, outcome="a")
    earlier = Vote.objects.create(comparison=second, voter=user, outcome="b")
    Vote.objects.filter(pk=earlier.pk).update(created_at=later.created_at.replace(year=2020))
    # Cast first: b's win (1016 / 984); then a's win from behind brings a above b.
    rows = {r.entry: r.rating for r in leaderboard(user=user)}
    assert rows["m@v1"] > rows["m@v2"]
    Vote.objects.filter(pk=later.pk).update(created_at=later.created_at.replace(year=2019))
    rows = {r.entry: r.rating for r in leaderboard(user=user)}
    assert rows["m@v2"] > rows["m@v1"]


def test_a_short_conversation_is_sent_whole_to_both_sides(client, user, fine_tune, monkeypatch):
    from apps.chat import services as run_services
    from apps.inference import services as inference

    sent, engine = [], inference.engine_get()

    class Watched:
        def stream(self, request):
            sent.append(request)
            return engine.stream(request)

    monkeypatch.setattr(run_services, "engine_get", lambda: Watched())
    client.force_login(user)
    turns = [{"role": "user", "content": "My name is Ada."}, {"role": "assistant", "content": "Hello Ada!"},
             {"role": "user", "content": "What is my name?"}]
    status, body = start(client, b=f"{fine_tune}@v1", messages=turns, prompt="")
    assert status == 201
    for answer in body["answers"]:
        assert run(client, None, {}, url=answer["runUrl"])[0] == 200
    assert [r.messages for r in sent] == [turns, turns]
    assert [r.model.key for r in sent] == [f"{settings.BASE_MODEL_ID}@v1", f"{fine_tune}@v1"]
    assert all(r.params.max_tokens == 4 and r.params.temperature == 0 for r in sent)

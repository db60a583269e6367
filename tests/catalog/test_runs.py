"""Using apps: streamed runs of each kind, conversations, the anonymous trial, the builder's preview and publish."""

import json

import pytest

from apps.catalog.models import StoreApp
from apps.chat import prompts
from apps.chat.models import AppRun, Conversation, Message
from tests.catalog.conftest import make_app, run

pytestmark = pytest.mark.django_db


def deltas(events):
    return "".join(e.get("delta", "") for e in events)


def test_translator_streams_the_translation_and_records_the_run(client, store):
    status, events = run(client, "translator", {"text": "The cat sleeps.", "source": "English", "target": "French"})
    assert status == 200
    assert sum(1 for e in events if "delta" in e) >= 1
    done = events[-1]
    assert done["done"] and done["usage"]["prompt_tokens"] > 0
    assert "\n" not in deltas(events)  # a one-line text gets a one-line translation
    assert AppRun.objects.get().app.slug == "translator"


@pytest.mark.parametrize(
    "body, param",
    [
        ({"text": "", "source": "English", "target": "French"}, "text"),
        ({"text": "hi", "source": "Klingon", "target": "French"}, "source"),
        ({"text": "hi", "source": "French", "target": "French"}, "target"),
    ],
)
def test_translator_bad_input_is_a_readable_400(client, store, body, param):
    status, body = run(client, "translator", body)
    assert status == 400 and body["error"]["param"] == param and body["error"]["message"]


def test_generator_fills_its_form_into_the_prompt(client, store):
    status, events = run(client, "text-generator", {"fields": {"topic": "the sea", "kind": "poem", "tone": "funny", "length": "short"}})
    assert status == 200 and events[-1]["done"]
    status, body = run(client, "text-generator", {"fields": {"topic": "x", "kind": "novel"}})
    assert status == 400 and body["error"]["param"] == "kind"
    status, body = run(client, "text-generator", {"fields": {"kind": "poem"}})
    assert status == 400 and body["error"]["param"] == "topic"


def test_generator_prompt_uses_the_chosen_kind_tone_and_length(store):
    app = StoreApp.objects.get(slug="text-generator")
    prompt = prompts.generator_prompt(app, {"topic": "otters", "kind": "poem", "tone": "funny", "length": "long"})
    assert prompt.messages[0]["role"] == "system" and "Output only the text" in prompt.messages[0]["content"]
    assert prompt.messages[1]["content"] == "Write a poem about the following.\n\notters\n\nTone: funny. Length: about 300 words."
    assert prompt.max_tokens == 640


def test_translator_prompt_asks_for_the_translation_alone(store):
    app = StoreApp.objects.get(slug="translator")
    prompt = prompts.translator_prompt(app, text="Good morning", source="English", target="German")
    assert "from English to German" in prompt.messages[0]["content"]
    assert "translation only" in prompt.messages[0]["content"]
    # Worked examples (English to German) as earlier turns, then the text.
    assert prompt.messages[1:-1] == [
        {"role": "user", "content": "I have two sisters."}, {"role": "assistant", "content": "Ich habe zwei Schwestern."},
        {"role": "user", "content": "The door is open."}, {"role": "assistant", "content": "Die Tür ist offen."},
    ]
    assert prompt.messages[-1] == {"role": "user", "content": "Good morning"}
    assert prompt.stop == ("\n",) and prompt.temperature == 0.0
    assert prompt.max_tokens == 16 + 2 * len("Good morning")  # a loop cannot fill the app's 384 tokens


def test_translator_examples_only_for_the_builtin_from_english(store, user):
    builtin = StoreApp.objects.get(slug="translator")
    from_spanish = prompts.translator_prompt(builtin, text="Hola", source="Spanish", target="German")
    assert [m["role"] for m in from_spanish.messages] == ["system", "user"]
    unnamed = prompts.translator_prompt(builtin, text="Hello", source="", target="French")
    assert unnamed.messages[2] == {"role": "assistant", "content": "J'ai deux sœurs."}
    community = make_app(user, kind="translator", instructions="Translate from {source} to {target}.")
    mine = prompts.translator_prompt(community, text="Hello", source="English", target="French")
    assert [m["role"] for m in mine.messages] == ["system", "user"]


def test_logged_in_chat_keeps_history_regenerates_and_edits(client, store, user):
    client.force_login(user)
    status, events = run(client, "chatbot", {"message": "Hello there"})
    assert status == 200
    conversation = Conversation.objects.get(pk=events[-1]["conversation"])
    assert conversation.user == user and conversation.title == "Hello there"
    assert list(conversation.messages.values_list("role", flat=True)) == ["user", "assistant"]
    assert conversation.messages.last().content == deltas(events)

    status, events = run(client, "chatbot", {"message": "And then?", "conversation": conversation.pk})
    assert [m.role for m in conversation.messages.all()] == ["user", "assistant", "user", "assistant"]

    status, events = run(client, "chatbot", {"conversation": conversation.pk, "regenerate": True})
    assert status == 200
    assert [m.content for m in conversation.messages.filter(role="user")] == ["Hello there", "And then?"]
    assert conversation.messages.count() == 4

    first = conversation.messages.filter(role="user").first()
    status, events = run(client, "chatbot", {"conversation": conversation.pk, "edit_message": first.pk, "message": "Hi instead"})
    assert status == 200
    assert [m.content for m in conversation.messages.filter(role="user")] == ["Hi instead"]
    assert conversation.messages.count() == 2


def test_conversations_belong_to_their_owner(client, store, user, other_user):
    client.force_login(user)
    _, events = run(client, "chatbot", {"message": "mine"})
    pk = events[-1]["conversation"]
    assert client.get(f"/conversations/{pk}/").json()["messages"][0]["content"] == "mine"
    client.force_login(other_user)
    assert client.get(f"/conversations/{pk}/").status_code == 404
    assert client.post(f"/conversations/{pk}/rename", data=json.dumps({"title": "x"}), content_type="application/json").status_code == 404
    assert client.post(f"/conversations/{pk}/delete").status_code == 404
    status, body = run(client, "chatbot", {"message": "sneak", "conversation": pk})
    assert status == 404
    assert Message.objects.filter(conversation_id=pk).count() == 2
    client.force_login(user)
    assert client.post(f"/conversations/{pk}/rename", data=json.dumps({"title": "Renamed"}), content_type="application/json").json()["title"] == "Renamed"
    assert client.post(f"/conversations/{pk}/delete").status_code == 200
    assert not Conversation.objects.filter(pk=pk).exists()


def test_anonymous_trial_is_limited_and_unsaved(client, store, settings):
    settings.ANON_TRIAL_RUNS = 2
    for _ in range(2):
        status, events = run(client, "chatbot", {"message": "hi", "history": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]})
        assert status == 200 and events[-1]["conversation"] is None
    status, body = run(client, "chatbot", {"message": "hi"})
    assert status == 429 and "Sign up" in body["error"]["message"]
    assert not Conversation.objects.exists() and AppRun.objects.count() == 2


def test_anonymous_visitors_cannot_run_community_apps(client, store, user):
    app = make_app(user)
    status, body = run(client, app.slug, {"message": "hi"})
    assert status == 400 and body["error"]["code"] == "login_required"


def test_long_conversations_keep_the_newest_turns_that_fit():
    app = StoreApp(instructions="sys", max_tokens=10)
    history = []
    for i in range(10):
        history += [{"role": "user", "content": f"question {i} " * 5}, {"role": "assistant", "content": f"answer {i} " * 5}]

    def count(messages):
        return sum(len(m["content"].split()) for m in messages)

    prompt = prompts.chat_prompt(app, history=history, message="latest", count_tokens=count, context=60)
    assert prompt.trimmed_turns > 0
    assert prompt.messages[0] == {"role": "system", "content": prompts.framed_instructions(app)}
    assert prompt.messages[0]["content"].endswith("\n\nsys")  # the creator's instructions, framed as the operator's
    assert prompt.messages[-1] == {"role": "user", "content": "latest"}
    assert count(prompt.messages) <= 50
    assert prompt.messages[1]["role"] == "user"  # whole exchanges are dropped, oldest first


def test_a_too_long_message_is_refused_with_context_length(client, store, user):
    client.force_login(user)
    status, body = run(client, "chatbot", {"message": "word " * 1500})
    assert status == 400 and body["error"]["code"] == "context_length_exceeded"


def test_malformed_run_body_is_400(client, store):
    response = client.post("/apps/translator/run", data="{oops", content_type="application/json")
    assert response.status_code == 400 and "could not be read" in response.json()["error"]["message"]


def test_build_preview_publish_and_find(client, store, user, other_user):
    client.force_login(user)
    response = client.post(
        "/build/new/",
        {
            "name": "Haiku Bot", "short_description": "Answers in haiku", "description": "", "kind": "chatbot",
            "instructions": "Answer in haiku.", "prompt_template": "", "conversation_starters": "Write about rain\nWrite about snow",
            "model_reference": "smollm2-135m-instruct@latest", "temperature": 0.5, "top_p": 0.9, "max_tokens": 12,
            "repetition_penalty": 1.1, "category": "",
        },
    )
    app = StoreApp.objects.get(name="Haiku Bot")
    assert response.status_code == 302 and response["Location"] == f"/build/{app.slug}/"
    assert app.conversation_starters == ["Write about rain", "Write about snow"] and not app.is_published
    html = client.get(f"/build/{app.slug}/").content.decode()
    assert "Preview" in html and "Write about rain" in html

    status, events = run(client, app.slug, {"message": "Write about rain"}, url=f"/build/{app.slug}/preview")
    assert status == 200 and events[-1]["done"]
    assert "Haiku Bot" not in client.get("/", {"q": "haiku"}).content.decode()

    client.post(f"/build/{app.slug}/publish", {"visibility": "public"})
    app.refresh_from_db()
    assert app.is_published and app.visibility == "public"
    client.force_login(other_user)
    assert "Haiku Bot" in client.get("/", {"q": "haiku"}).content.decode()


def test_builder_keeps_a_history_and_restores(client, store, user):
    app = make_app(user)
    client.force_login(user)
    form = {
        "name": "Pirate Helper", "short_description": "Now shorter", "description": "", "kind": "chatbot",
        "instructions": "v2 instructions", "prompt_template": "", "conversation_starters": "",
        "model_reference": "smollm2-135m-instruct@latest", "temperature": 0.3, "top_p": 0.9, "max_tokens": 20,
        "repetition_penalty": 1.0, "category": "",
    }
    assert client.post(f"/build/{app.slug}/", form).status_code == 302
    app.refresh_from_db()
    assert app.short_description == "Now shorter" and app.versions.count() == 2
    client.post(f"/build/{app.slug}/restore/1")
    app.refresh_from_db()
    assert app.short_description == "Answers like a pirate" and app.instructions.startswith("SECRET") and app.versions.count() == 3


def test_builder_rejects_a_model_the_user_may_not_use(client, store, user, other_user, tiny_hf_dir):
    from apps.registry.services import model_version_register

    model_version_register(name="ft:smollm2-135m-instruct:other::ftjob-9", source_dir=tiny_hf_dir, owner=other_user)
    client.force_login(user)
    html = client.get("/build/new/").content.decode()
    assert "ftjob-9" not in html
    response = client.post("/build/new/", {"name": "X", "short_description": "x", "kind": "chatbot", "model_reference": "ft:smollm2-135m-instruct:other::ftjob-9@latest", "temperature": 0.5, "top_p": 0.9, "max_tokens": 10, "repetition_penalty": 1.0})
    assert response.status_code == 200 and not StoreApp.objects.filter(name="X").exists()


def test_generator_apps_need_a_template_field(client, store, user):
    client.force_login(user)
    base = {"name": "Gen", "short_description": "x", "kind": "generator", "model_reference": "smollm2-135m-instruct@latest",
            "temperature": 0.5, "top_p": 0.9, "max_tokens": 10, "repetition_penalty": 1.0, "instructions": "", "conversation_starters": ""}
    response = client.post("/build/new/", {**base, "prompt_template": "no fields here"})
    assert response.status_code == 200 and "at least one {field}" in response.content.decode()
    response = client.post("/build/new/", {**base, "prompt_template": "Write a slogan for {product} aimed at {audience}"})
    app = StoreApp.objects.get(name="Gen")
    assert [f["name"] for f in app.input_fields] == ["product", "audience"]
    status, events = run(client, app.slug, {"fields": {"product": "tea", "audience": "cats"}}, url=f"/build/{app.slug}/preview")
    assert status == 200


def test_my_apps_lists_usage(client, store, user):
    app = make_app(user)
    client.force_login(user)
    run(client, app.slug, {"message": "hi"})
    from apps.catalog.selectors import app_list_owned

    row = app_list_owned(user=user).get()
    assert (row.run_count, row.conversation_count) == (1, 1) and row.tokens == AppRun.objects.get().completion_tokens > 0
    html = client.get("/build/").content.decode()
    assert "Pirate Helper" in html and f"<td>{row.tokens}</td>" in html


def test_delete_app(client, store, user, other_user):
    app = make_app(user)
    client.force_login(other_user)
    assert client.post(f"/build/{app.slug}/delete").status_code == 403  # a public app: seen, not theirs
    client.force_login(user)
    assert client.post(f"/build/{app.slug}/delete").status_code == 302
    assert not StoreApp.objects.filter(pk=app.pk).exists()

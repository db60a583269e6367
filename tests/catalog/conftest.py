import json


def run(client, slug, body, *, url=None):
    """POST to an app's run endpoint; returns (status, events or error body)."""
    response = client.post(url or f"/apps/{slug}/run", data=json.dumps(body), content_type="application/json")
    if response["Content-Type"].startswith("text/event-stream"):
        text = b"".join(response.streaming_content).decode()
        events = [json.loads(chunk[6:]) for chunk in text.split("\n\n") if chunk.startswith("data: ")]
        return response.status_code, events
    return response.status_code, response.json()


def make_app(user, **overrides):
    from apps.catalog.services import app_create, app_publish

    data = {
        "name": "Pirate Helper",
        "short_description": "Answers like a pirate",
        "description": "Arr, a helper for sailors.",
        "kind": "chatbot",
        "instructions": "SECRET-INSTRUCTIONS: always talk like a pirate.",
        "conversation_starters": ["Ahoy?"],
        "model_reference": "smollm2-135m-instruct@latest",
        "temperature": 0.0,
        "max_tokens": 8,
    }
    visibility = overrides.pop("visibility", "public")
    data.update(overrides)
    app = app_create(user=user, data=data)
    if visibility:
        app_publish(app=app, user=user, visibility=visibility)
    return app

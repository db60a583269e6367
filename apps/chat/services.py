"""Running an app: one code path for every kind, from the pages (and later the API).

`app_run_start` does everything that can fail on bad input before any byte is streamed (validation, access,
the trial limit, the context check, starting the engine), so such errors become a readable 4xx. `run_events`
then streams the answer and, once it is complete, stores it with its token usage.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction

from apps.catalog.models import StoreApp
from apps.chat import prompts
from apps.chat.models import AppRun, Conversation, Message
from apps.core.errors import InvalidRequest, NotFound, StoreError
from apps.inference.services import engine_get, generation_request_build, prompt_measure
from apps.inference.types import SamplingParams

MAX_ANON_HISTORY = 20


class TrialLimitReached(StoreError):
    status = 429
    code = "trial_limit"


@dataclass
class Run:
    app: StoreApp
    user: object
    stream: object
    conversation: Conversation | None = None
    api_key: object = None  # the key of an API call, for usage per key
    trimmed_turns: int = 0
    meta: dict = field(default_factory=dict)


def _sampling(app: StoreApp, prompt: prompts.Prompt) -> SamplingParams:
    return SamplingParams(
        max_tokens=prompt.max_tokens,
        temperature=app.temperature if prompt.temperature is None else prompt.temperature,
        top_p=app.top_p,
        repetition_penalty=app.repetition_penalty,
        stop=prompt.stop,
    )


def conversation_get(*, user, conversation_id) -> Conversation:
    conversation = Conversation.objects.filter(pk=conversation_id, user=user).select_related("app").first() if user.is_authenticated else None
    if conversation is None:
        raise NotFound("This conversation does not exist.", code="conversation_not_found")
    return conversation


def _check_trial(*, app: StoreApp, user, session) -> None:
    if user.is_authenticated:
        return
    if not app.is_builtin:
        raise InvalidRequest("Log in to use apps made by the community.", code="login_required")
    used = session.get("trial_runs", 0)
    if used >= settings.ANON_TRIAL_RUNS:
        raise TrialLimitReached(
            f"You have used your {settings.ANON_TRIAL_RUNS} free tries. Sign up (it is free) to keep going."
        )
    session["trial_runs"] = used + 1


def _chat_history(*, app, user, inputs) -> tuple[Conversation | None, list[dict], str]:
    message = inputs.get("message", "")
    if not user.is_authenticated:
        history = inputs.get("history") or []
        if not isinstance(history, list) or len(history) > MAX_ANON_HISTORY:
            raise InvalidRequest("The conversation is too long to continue without an account.", param="history")
        turns = [
            {"role": t.get("role"), "content": str(t.get("content", ""))[: prompts.MAX_INPUT_CHARS]}
            for t in history
            if isinstance(t, dict) and t.get("role") in ("user", "assistant")
        ]
        return None, turns, message
    conversation = None
    if inputs.get("conversation"):
        conversation = conversation_get(user=user, conversation_id=inputs["conversation"])
        if conversation.app_id != app.pk:
            raise NotFound("This conversation belongs to another app.")
    with transaction.atomic():
        if conversation is not None and inputs.get("regenerate"):
            last = conversation.messages.last()
            if last is not None and last.role == Message.Role.ASSISTANT:
                last.delete()
            last_user = conversation.messages.filter(role=Message.Role.USER).last()
            if last_user is None:
                raise InvalidRequest("There is nothing to regenerate yet.")
            message = last_user.content
            last_user.delete()
        elif conversation is not None and inputs.get("edit_message"):
            edited = conversation.messages.filter(pk=inputs["edit_message"], role=Message.Role.USER).first()
            if edited is None:
                raise NotFound("That message is not in this conversation.")
            conversation.messages.filter(created_at__gte=edited.created_at, pk__gte=edited.pk).delete()
        if conversation is None:
            conversation = Conversation.objects.create(app=app, user=user, title=(message.strip()[:60] or "New chat"))
        history = [{"role": m.role, "content": m.content} for m in conversation.messages.all()]
    return conversation, history, message


def app_run_start(*, app: StoreApp, user, session, inputs: dict, api_key=None) -> Run:
    _check_trial(app=app, user=user, session=session)
    conversation = None
    if app.kind == StoreApp.Kind.CHATBOT:
        conversation, history, message = _chat_history(app=app, user=user, inputs=inputs)
        # The app's model as its creator sees it (a published app may run on its creator's fine-tune).
        count, context = prompt_measure(user=app.creator, reference=app.model_reference)
        prompt = prompts.chat_prompt(app, history=history, message=message, count_tokens=count, context=context)
    elif app.kind == StoreApp.Kind.TRANSLATOR:
        prompt = prompts.translator_prompt(
            app, text=inputs.get("text", ""), source=inputs.get("source", ""), target=inputs.get("target", "")
        )
    else:
        prompt = prompts.generator_prompt(app, inputs.get("fields") or {})
    request = generation_request_build(
        user=app.creator, reference=app.model_reference, messages=prompt.messages, params=_sampling(app, prompt)
    )
    stream = engine_get().stream(request)
    if conversation is not None:
        Message.objects.create(conversation=conversation, role=Message.Role.USER, content=prompt.messages[-1]["content"])
    return Run(app=app, user=user, stream=stream, conversation=conversation, api_key=api_key, trimmed_turns=prompt.trimmed_turns)


def run_events(run: Run) -> Iterator[dict]:
    """{"delta": text} for each piece, then {"done": ..., usage}; stores the answer once it is complete."""
    if run.trimmed_turns:
        yield {"notice": f"The conversation is long: the {run.trimmed_turns} oldest exchange(s) were left out to fit the model's context."}
    result = None
    try:
        for event in run.stream:
            if event.delta:
                yield {"delta": event.delta}
            if event.result is not None:
                result = event.result
    finally:
        run.stream.close()
    if result is None:
        return
    with transaction.atomic():
        if run.conversation is not None:
            Message.objects.create(
                conversation=run.conversation, role=Message.Role.ASSISTANT, content=result.text, finish_reason=result.finish_reason
            )
            run.conversation.save(update_fields=["updated_at"])
        AppRun.objects.create(
            app=run.app,
            model=result.model,
            user=run.user if run.user.is_authenticated else None,
            api_key=run.api_key,
            conversation=run.conversation,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            finish_reason=result.finish_reason,
        )
    yield {
        "done": True,
        "finish_reason": result.finish_reason,
        "conversation": run.conversation.pk if run.conversation else None,
        "usage": {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens},
    }


@transaction.atomic
def conversation_rename(*, conversation: Conversation, title: str) -> Conversation:
    title = title.strip()[:120]
    if not title:
        raise InvalidRequest("A title cannot be empty.", param="title")
    conversation.title = title
    conversation.save(update_fields=["title", "updated_at"])
    return conversation


def conversation_delete(*, conversation: Conversation) -> None:
    conversation.delete()


# --- Apps through the OpenAI-compatible API: stateless, usage recorded -------------------------------------
APP_PREFIX = "app:"
SAMPLING_FIELDS = ("temperature", "top_p", "max_tokens", "repetition_penalty")


def app_chat_request(*, app: StoreApp, messages: list[dict], given: dict, params: SamplingParams, extra: dict):
    """`model="app:<slug>"`: the app's instructions first, the caller's sampling over the app's defaults."""
    from dataclasses import replace

    from apps.catalog.builtin import LANGUAGES

    system = app.instructions
    if app.kind == StoreApp.Kind.TRANSLATOR:
        target = extra.get("target_language") or "English"
        source = extra.get("source_language") or "the language of the text"
        if target not in LANGUAGES:
            raise InvalidRequest(f"target_language must be one of: {', '.join(LANGUAGES)}.", param="target_language")
        system = app.instructions.format_map(prompts._Blank(source=source, target=target))
    defaults = {"temperature": app.temperature, "top_p": app.top_p, "max_tokens": app.max_tokens,
                "repetition_penalty": app.repetition_penalty}
    params = replace(params, **{k: v for k, v in defaults.items() if k not in given})
    full = ([{"role": "system", "content": system}] if system else []) + [m for m in messages if m["role"] != "system"]
    return generation_request_build(user=app.creator, reference=app.model_reference, messages=full, params=params)


def usage_record(*, user, api_key, results, app: StoreApp | None = None) -> None:
    """Token usage of API calls (stateless: the messages themselves are not kept), per user, key and app."""
    AppRun.objects.bulk_create(
        AppRun(app=app, model=r.model, user=user, api_key=api_key, prompt_tokens=r.prompt_tokens,
               completion_tokens=r.completion_tokens, finish_reason=r.finish_reason)
        for r in results
    )

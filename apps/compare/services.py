"""Writes of side-by-side comparisons: create one (its two sides checked), run a side, vote.

A comparison's two answers are two ordinary runs of the one run service (`apps.chat.services`): the same quotas,
stream slots, leak guard and usage records as any run, streamed with the app pages' events (`run_app_events`).
The browser opens both at once, each in a request of its own, so both stream at the same time. A side runs once;
its answer is kept when its run ends, and the owner may vote once both have ended.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, closing

from asgiref.sync import sync_to_async
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from apps.catalog.access import access_app
from apps.catalog.builtin import LANGUAGES
from apps.catalog.models import StoreApp
from apps.catalog.selectors import builder_model_choices
from apps.chat import prompts
from apps.chat.services import Caller, app_run_start, model_run_start, run_app_events
from apps.compare.models import Answer, Comparison, Vote
from apps.core.errors import Conflict, InvalidRequest, NotFound
from apps.inference.types import SamplingParams
from apps.registry.selectors import model_version_resolve

APP_PREFIX = "app:"
MAX_MESSAGES = 9  # a short conversation: up to four exchanges before the prompt
DEFAULT_TEMPERATURE = 0.7
DEFAULT_MAX_TOKENS = 128
MAX_TOKENS = 1024


def _messages(*, prompt, messages) -> list[dict]:
    """The conversation both sides answer: `messages` (roles system/user/assistant, ending with the user's turn) or
    one `prompt`."""
    if messages in (None, []):
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidRequest(_("Write a prompt for both to answer."), param="prompt")
        messages = [{"role": "user", "content": prompt}]
    if not isinstance(messages, list) or len(messages) > MAX_MESSAGES:
        raise InvalidRequest(_("messages must be a list of at most %(n)s messages.") % {"n": MAX_MESSAGES}, param="messages")
    clean = []
    for index, message in enumerate(messages):
        name = f"messages[{index}]"
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
            raise InvalidRequest(_("%(name)s needs a role (system, user or assistant) and a content.") % {"name": name},
                                 param="messages")
        content = message.get("content")
        prompts.text_check(content, f"{name}.content")
        if not content.strip():
            raise InvalidRequest(_("%(name)s is empty.") % {"name": name}, param="messages")
        if len(content) > prompts.MAX_INPUT_CHARS:
            raise InvalidRequest(_("%(name)s is too long (at most %(n)s characters).") % {"name": name, "n": prompts.MAX_INPUT_CHARS},
                                 param="messages")
        clean.append({"role": message["role"], "content": content})
    if clean[-1]["role"] != "user":
        raise InvalidRequest(_("The conversation must end with the user's prompt."), param="messages")
    return clean


def _number(value, *, name: str, default, low, high, kind=float):
    if value in (None, ""):
        return default
    try:
        number = kind(value)
    except (TypeError, ValueError):
        number = None
    if number is None or isinstance(value, bool) or not low <= number <= high or (kind is int and number != float(value)):
        raise InvalidRequest(_("%(name)s must be a number from %(low)s to %(high)s.") % {"name": name, "low": low, "high": high},
                             param=name)
    return number


def _model_side(*, user, reference: str, param: str, options: dict) -> dict:
    """A model the user may build an app on (the builder's picker), pinned to the version it names now."""
    if reference not in dict(builder_model_choices(user=user)):
        raise NotFound(_("The model %(ref)s is not one you can compare: pick one from the list.") % {"ref": reference},
                       code="model_not_found", param=param)
    version = model_version_resolve(reference=reference, user=user)
    return {"entry": version.reference, "reference": reference, "label": version.reference,
            "settings": {"model": version.reference, "temperature": options["temperature"], "max_tokens": options["max_tokens"]}}


def _app_side(*, user, reference: str, param: str, options: dict) -> tuple[StoreApp, dict]:
    """An app the user may run; its public settings only (never its creator's instructions or template)."""
    try:
        app = access_app(user=user, slug=reference.removeprefix(APP_PREFIX))
    except NotFound as exc:
        exc.param = param
        raise
    settings = {"app": app.name, "creator": app.creator.username if app.creator_id else None, "model": app.model_reference,
                "temperature": app.temperature, "top_p": app.top_p, "max_tokens": app.max_tokens,
                "repetition_penalty": app.repetition_penalty}
    if app.kind == StoreApp.Kind.TRANSLATOR:
        settings["temperature"] = 0.0  # a translator decodes greedily whatever its setting (prompts.translator_prompt)
        settings["target"] = options["target"]
    return app, {"entry": f"{APP_PREFIX}{app.slug}", "reference": f"{APP_PREFIX}{app.address}", "label": app.name,
                 "settings": settings}


def comparison_create(*, user, a: str, b: str, prompt: str = "", messages: list | None = None, temperature=None,
                      max_tokens=None, target: str = "") -> Comparison:
    """Check both sides (two models, or two apps of one kind, that the user may use, and not the same one twice)
    and the prompt; nothing runs yet."""
    if not isinstance(a, str) or not a.strip() or not isinstance(b, str) or not b.strip():
        raise InvalidRequest(_("Pick two models or two apps to compare."), param="b" if isinstance(a, str) and a.strip() else "a")
    a, b = a.strip(), b.strip()
    conversation = _messages(prompt=prompt, messages=messages)
    options = {"temperature": _number(temperature, name="temperature", default=DEFAULT_TEMPERATURE, low=0, high=2),
               "max_tokens": _number(max_tokens, name="max_tokens", default=DEFAULT_MAX_TOKENS, low=1, high=MAX_TOKENS, kind=int),
               "target": target or "English"}  # the translator's target, English by default (as on /v1)
    if options["target"] not in LANGUAGES:
        raise InvalidRequest(_("Choose a target language from the list."), param="target")
    if a.startswith(APP_PREFIX) != b.startswith(APP_PREFIX):
        raise InvalidRequest(_("Compare two models or two apps, not a model with an app."), param="b")
    if a.startswith(APP_PREFIX):
        (app_a, side_a), (app_b, side_b) = (_app_side(user=user, reference=r, param=p, options=options) for r, p in ((a, "a"), (b, "b")))
        if app_a.kind != app_b.kind:
            raise InvalidRequest(_("Compare two apps of the same kind: %(a)s is a %(ka)s, %(b)s a %(kb)s.") % {
                "a": app_a.name, "ka": app_a.get_kind_display().lower(), "b": app_b.name, "kb": app_b.get_kind_display().lower()},
                param="b")
        kind, options = app_a.kind, {"target": options["target"]} if app_a.kind == StoreApp.Kind.TRANSLATOR else {}
    else:
        side_a, side_b = (_model_side(user=user, reference=r, param=p, options=options) for r, p in ((a, "a"), (b, "b")))
        kind, options = Comparison.Kind.MODEL, {"temperature": options["temperature"], "max_tokens": options["max_tokens"]}
    if side_a["entry"] == side_b["entry"]:
        raise InvalidRequest(_("Both sides are %(label)s: pick two different ones.") % {"label": side_a["label"]}, param="b")
    with transaction.atomic():
        comparison = Comparison.objects.create(owner=user, kind=kind, messages=conversation, options=options)
        Answer.objects.bulk_create([Answer(comparison=comparison, side="a", **side_a), Answer(comparison=comparison, side="b", **side_b)])
    return comparison


def answer_run_start(*, caller: Caller, comparison: Comparison, side: str, stream_async: bool = False) -> Iterator[dict] | AsyncIterator[dict]:
    """Start one side's run (once): its events as the app pages stream them, the answer kept when the run ends.
    A run refused before it starts (a quota, a busy model) may be asked again."""
    answer = next((a for a in comparison.answers.all() if a.side == side), None)
    if answer is None:
        raise NotFound(_("A comparison has two sides, a and b."), param="side")
    if not Answer.objects.filter(pk=answer.pk, started_at__isnull=True).update(started_at=timezone.now()):
        raise Conflict(_("This side has already answered: start a new comparison to ask again."), code="answer_started")
    try:
        run = _run_start(caller=caller, comparison=comparison, answer=answer, stream_async=stream_async)
    except BaseException:
        Answer.objects.filter(pk=answer.pk).update(started_at=None)
        raise
    return _kept(run_app_events(run), answer)


def _run_start(*, caller: Caller, comparison: Comparison, answer: Answer, stream_async: bool):
    if comparison.kind == Comparison.Kind.MODEL:
        params = SamplingParams(temperature=comparison.options["temperature"], max_tokens=comparison.options["max_tokens"])
        return model_run_start(caller=caller, reference=answer.entry, params=params, messages=comparison.messages,
                               stream_async=stream_async)
    app = access_app(user=caller.user, slug=answer.reference.removeprefix(APP_PREFIX))  # it may have turned private since
    return app_run_start(caller=caller, app=app, messages=comparison.messages, inputs={"target": comparison.options.get("target", "")},
                         stream_async=stream_async)


def _kept(events, answer: Answer):
    """`events` as they are, the answer's text kept (before its `done` event goes out, so a vote sent on seeing it
    finds both answers ended)."""
    pieces: list[str] = []

    def ended(event: dict) -> bool:
        if "delta" in event:
            pieces.append(event["delta"])
        return "done" in event

    def keep(event: dict) -> None:
        Answer.objects.filter(pk=answer.pk).update(text="".join(pieces), finish_reason=event.get("finish_reason") or "",
                                                   finished_at=timezone.now())

    if hasattr(events, "__aiter__"):
        async def akept():
            async with aclosing(events) as items:
                async for event in items:
                    if ended(event):
                        await sync_to_async(keep)(event)
                    yield event
        return akept()

    def kept():
        with closing(events) as items:
            for event in items:
                if ended(event):
                    keep(event)
                yield event
    return kept()


def vote_cast(*, user, comparison: Comparison, outcome) -> Vote:
    """The owner's one vote on their comparison, once both answers have ended."""
    if comparison.owner_id != user.pk:
        raise NotFound(_("This comparison does not exist."), code="comparison_not_found", param="comparison")
    if outcome not in Vote.Outcome.values:
        raise InvalidRequest(_("Vote a, b, tie or both_bad."), param="outcome")
    if Answer.objects.filter(comparison=comparison, finished_at__isnull=True).exists():
        raise Conflict(_("Vote once both answers have finished."), code="answers_not_finished")
    try:
        with transaction.atomic():
            return Vote.objects.create(comparison=comparison, voter=user, outcome=outcome)
    except IntegrityError:
        raise Conflict(_("You have already voted on this comparison."), code="already_voted") from None


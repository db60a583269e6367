"""The one run service: every face (pages, /api/v1, /v1) runs an app or a model through here.

A run goes through the same steps wherever it comes from:

1. **resolve** the model once (an app runs on its model as its creator sees it: a published app may run on its
   creator's fine-tune);
2. **build the prompt** through `prompts` (one function per kind of app), which validates the input;
3. **admit** it: the caller's quotas (per user and per API key) or, for an anonymous visitor, the trial limit.
   Nothing is written before this step, so bad input and a refused run change nothing;
4. **start** the generation (`n` streams, decoded together by the engine) and write the user's turn;
5. **record** the answer: the assistant's message, one `AppRun` per choice (the basis of usage) and the tokens
   against the quotas. This module is the only writer of `AppRun`.

A face then shapes what `run_events` yields: server-sent events or JSON for pages and `/api/v1`
(`run_app_events`), OpenAI's chunks and objects for `/v1`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from django.db import transaction

from apps.catalog.models import StoreApp
from apps.chat import prompts
from apps.chat.admission import (
    Meter,
    quotas_take,
    request_bound,
    stream_slots_take,
)
from apps.chat.conversations import chat_turns_read, chat_turns_write
from apps.chat.guard import LeakGuard
from apps.chat.models import AppRun, Conversation, Message
from apps.core.errors import InvalidRequest
from apps.inference.services import engine_get, model_spec_resolve, prompt_measure
from apps.inference.types import (
    GenerationRequest,
    GenerationResult,
    InferenceError,
    SamplingParams,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caller:
    """Who runs: a user (maybe anonymous), the API key of a program, the client's address (anonymous trials)."""

    user: object
    api_key: object = None
    address: str = ""


@dataclass
class Run:
    caller: Caller
    app: StoreApp | None
    request: GenerationRequest  # what the model is asked (choice i uses seed + i)
    streams: list
    meter: Meter
    limit_headers: dict
    conversation: Conversation | None = None
    trimmed_turns: int = 0
    prompt_tokens: int = 0  # of one choice

    def leak_guard(self) -> LeakGuard | None:
        """A guard for one choice of an app's run, unless the caller is the app's creator (it is theirs)."""
        app, user = self.app, self.caller.user
        if app is None or (user.is_authenticated and app.creator_id == user.pk):
            return None
        guard = LeakGuard(private_texts=prompts.private_texts(app), secrets=list(getattr(app, "secret_strings", None) or []))
        return guard if guard.active else None


# Events of a run, in order: maybe a Notice, Deltas and a ChoiceEnd per choice, then Done once it is recorded.
@dataclass
class Notice:
    text: str


@dataclass
class Delta:
    index: int
    text: str


@dataclass
class ChoiceEnd:
    index: int
    result: GenerationResult


@dataclass
class Done:
    results: list[GenerationResult]
    conversation: Conversation | None = None

    @property
    def usage(self) -> dict:
        prompt = self.results[0].prompt_tokens if self.results else 0
        completion = sum(r.completion_tokens for r in self.results)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def app_summary(self) -> dict:
        """How an app's run ended, as pages and /api/v1 show it (the last event, or beside the whole text)."""
        return {
            "finish_reason": self.results[0].finish_reason,
            "conversation": self.conversation.pk if self.conversation else None,
            "usage": {k: self.usage[k] for k in ("prompt_tokens", "completion_tokens")},
        }


@dataclass
class RunOutcome:
    """A run read to its end (the answer without streaming)."""

    texts: list[str] = field(default_factory=list)
    notice: str | None = None
    done: Done | None = None


# --- Starting a run -------------------------------------------------------------------------------------------
def app_run_start(*, caller: Caller, app: StoreApp, inputs: dict | None = None, messages: list[dict] | None = None,
                  overrides: dict | None = None, n: int = 1) -> Run:
    """Run an app with the input of a form (`inputs`: pages, /api/v1) or a whole chat (`messages`: /v1, stateless).

    `overrides` are the sampling settings the caller chose (/v1), over the app's own and its prompt's."""
    if not caller.user.is_authenticated and not app.is_builtin:
        raise InvalidRequest("Log in to use apps made by the community.", code="login_required")
    inputs = inputs or {}
    spec = model_spec_resolve(user=app.creator, reference=app.model_reference)
    turns, measure = None, None
    if app.kind == StoreApp.Kind.TRANSLATOR:
        text = inputs.get("text", "") if messages is None else prompts.translator_text(messages)
        prompt = prompts.translator_prompt(app, text=text, source=inputs.get("source", ""), target=inputs.get("target", ""))
    elif messages is not None:
        prompt = prompts.messages_prompt(app, messages)
    elif app.kind == StoreApp.Kind.CHATBOT:
        turns = chat_turns_read(app=app, user=caller.user, inputs=inputs)
        measure = prompt_measure(spec)
        prompt = prompts.chat_prompt(app, history=turns.history, message=turns.message, count_tokens=measure.count,
                                     context=measure.context)
    else:
        prompt = prompts.generator_prompt(app, inputs.get("fields") or {})
    overrides = overrides or {}
    request = GenerationRequest(model=spec, messages=prompt.messages,
                                params=replace(_app_sampling(app, prompt), **overrides))
    measure = measure or prompt_measure(spec)
    run = _run_start(caller=caller, app=app, request=request, measure=measure, n=n,
                     caller_max_tokens="max_tokens" in overrides, trimmed_turns=prompt.trimmed_turns)
    if turns is not None:
        run.conversation = chat_turns_write(app=app, user=caller.user, turns=turns, message=prompt.messages[-1]["content"])
    return run


def model_run_start(*, caller: Caller, reference: str, params: SamplingParams, messages: list[dict] | None = None,
                    prompt: str | None = None, n: int = 1) -> Run:
    """Run a registry model (by id, `<id>@<alias>` or `<id>@v<N>`) on a chat or a plain prompt (/v1)."""
    if messages is not None:
        for index, message in enumerate(messages):
            prompts.text_check(message["content"], f"messages[{index}].content")
    else:
        prompts.text_check(prompt, "prompt")
    spec = model_spec_resolve(user=caller.user, reference=reference)
    request = GenerationRequest(model=spec, messages=messages, prompt=prompt, params=params)
    return _run_start(caller=caller, app=None, request=request, measure=prompt_measure(spec), n=n,
                      caller_max_tokens=params.max_tokens is not None)


def _run_start(*, caller: Caller, app, request: GenerationRequest, measure, n: int, caller_max_tokens: bool,
               trimmed_turns: int = 0) -> Run:
    """Bound the request, admit it (quotas, stream slots), start its n streams. Nothing is written before this."""
    prompt_tokens = measure.request_tokens(request)
    request = request_bound(request, prompt_tokens=prompt_tokens, context=measure.context, n=n,
                            caller_max_tokens=caller_max_tokens)
    who = {"user": caller.user, "api_key": caller.api_key, "address": caller.address}
    # Slots first: a caller with too many answers streaming is refused without spending a request of the quota.
    meter = Meter(quotas=[], slots=stream_slots_take(**who))
    try:
        meter.quotas, headers = quotas_take(**who)
        engine = engine_get()
        streams = []
        for i in range(n):  # all n start now, so the engine decodes them together
            params = request.params
            seeded = replace(params, seed=params.seed + i) if params.seed is not None else params
            streams.append(engine.stream(replace(request, params=seeded)))
    except BaseException:
        meter.release()
        raise
    meter.start(prompt_tokens * n)
    return Run(caller=caller, app=app, request=request, streams=streams, meter=meter, limit_headers=headers,
               trimmed_turns=trimmed_turns, prompt_tokens=prompt_tokens)


def _app_sampling(app: StoreApp, prompt: prompts.Prompt) -> SamplingParams:
    return SamplingParams(
        max_tokens=prompt.max_tokens,
        temperature=app.temperature if prompt.temperature is None else prompt.temperature,
        top_p=app.top_p,
        repetition_penalty=app.repetition_penalty,
        stop=prompt.stop,
    )


# --- Reading a run ----------------------------------------------------------------------------------------------
def run_events(run: Run) -> Iterator[Notice | Delta | ChoiceEnd | Done]:
    """The run's events; once every choice has ended, the run is recorded and `Done` comes last.

    Tokens are billed as they come. Closing the iterator early (a client that went away) frees the engine's slots
    at once and records what was sent, billed, with finish_reason `cancelled`."""
    results = []
    try:
        if run.trimmed_turns:
            yield Notice(f"The conversation is long: the {run.trimmed_turns} oldest exchange(s) were left out to fit the model's context.")
        for index, stream in enumerate(run.streams):
            result, guard, produced = None, run.leak_guard(), 0
            for event in stream:
                if event.delta:
                    run.meter.tick()
                    produced += 1
                    text = guard.feed(event.delta) if guard else event.delta
                    if text:
                        yield Delta(index, text)
                    if guard and guard.tripped:
                        result = _filtered(run, guard, produced)
                        stream.close()  # the engine stops generating it at once
                        yield Notice(LEAK_NOTICE)
                        break
                if event.result is not None:
                    result = event.result
                    tail = guard.flush() if guard else ""
                    if tail:
                        yield Delta(index, tail)
            if result is None:
                raise InferenceError("The generation ended without a result.")
            results.append(result)
            yield ChoiceEnd(index, result)
    finally:
        for stream in run.streams:
            stream.close()
        run.meter.release()
        if len(results) < len(run.streams):
            _record_partial(run)
    _record(run, results)
    yield Done(results, run.conversation)


def run_collect(run: Run) -> RunOutcome:
    """The whole answer at once (non-streaming faces)."""
    outcome = RunOutcome(texts=["" for _ in run.streams])
    for event in run_events(run):
        if isinstance(event, Delta):
            outcome.texts[event.index] += event.text
        elif isinstance(event, ChoiceEnd):
            outcome.texts[event.index] = event.result.text
        elif isinstance(event, Notice):
            outcome.notice = event.text
        elif isinstance(event, Done):
            outcome.done = event
    return outcome


def run_app_events(run: Run) -> Iterator[dict]:
    """The events of an app's run as pages and /api/v1 send them: `{"delta"}`, `{"notice"}`, then `{"done", ...}`."""
    for event in run_events(run):
        if isinstance(event, Delta):
            yield {"delta": event.text}
        elif isinstance(event, Notice):
            yield {"notice": event.text}
        elif isinstance(event, Done):
            yield {"done": True, **event.app_summary()}


LEAK_NOTICE = "The answer was stopped: it was giving away the app's private instructions."


def _filtered(run: Run, guard: LeakGuard, produced: int) -> GenerationResult:
    """The result of a choice the leak guard stopped: what was sent, finish_reason `content_filter` (OpenAI's)."""
    logger.warning("leak guard stopped a run of app %s for user %s", run.app.slug, run.caller.user.pk)
    return GenerationResult(text=guard.text[:guard.sent], finish_reason="content_filter",
                            prompt_tokens=run.prompt_tokens, completion_tokens=produced, model=run.request.model.key)


def _record(run: Run, results: list[GenerationResult]) -> None:
    """The one writer of AppRun: the answer, one row per choice with its tokens, and the rest of the tokens."""
    user = run.caller.user if run.caller.user.is_authenticated else None
    with transaction.atomic():
        if run.conversation is not None:
            first = results[0]
            Message.objects.create(conversation=run.conversation, role=Message.Role.ASSISTANT, content=first.text,
                                   finish_reason=first.finish_reason)
            run.conversation.save(update_fields=["updated_at"])
        AppRun.objects.bulk_create(
            AppRun(app=run.app, model=r.model, user=user, api_key=run.caller.api_key, conversation=run.conversation,
                   prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens, finish_reason=r.finish_reason)
            for r in results
        )
    run.meter.settle(sum(r.total_tokens for r in results))


def _record_partial(run: Run) -> None:
    """A run that did not end (the client left, the engine failed): what was sent, billed and counted as usage."""
    completion = run.meter.settle_partial()
    AppRun.objects.create(
        app=run.app, model=run.request.model.key, user=run.caller.user if run.caller.user.is_authenticated else None,
        api_key=run.caller.api_key, conversation=run.conversation, prompt_tokens=run.meter.prompt_tokens,
        completion_tokens=completion, finish_reason="cancelled",
    )

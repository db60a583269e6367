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

**Streaming under ASGI.** A face that streams its answer from an ASGI server starts the run with
`stream_async=True`: the n streams are opened with `engine.astream` on the server's event loop (the sync view runs
in a thread and hands the opening to that loop with `async_to_sync`), and `arun_events` reads them there, with its
database steps (billing, recording) sent to a thread. No thread waits on a stream. Refusals (a full queue on the
model server, a prompt too long) raise while opening, before the view has sent anything. Under WSGI and the test
client, everything stays sync (`run_events`). Both loops share `_RunReader`, so they differ only in how they wait.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.db import connections, transaction
from django.utils.translation import gettext as _

from apps.catalog.models import StoreApp
from apps.chat import prompts
from apps.chat.admission import (
    Meter,
    quotas_take,
    request_bound,
    request_check,
    stream_slots_take,
)
from apps.chat.conversations import chat_turns_read, chat_turns_write
from apps.chat.guard import LeakGuard
from apps.chat.models import AppRun, Conversation, Message
from apps.core.asgi import client_gone
from apps.core.errors import ClientGone, InvalidRequest
from apps.core.streaming import map_events
from apps.inference.services import (
    classification_run,
    engine_get,
    model_spec_for,
    model_spec_resolve,
    prompt_measure,
)
from apps.inference.types import (
    EngineOverloaded,
    GenerationRequest,
    GenerationResult,
    InferenceError,
    SamplingParams,
)
from apps.knowledge.selectors import Source, app_has_knowledge, knowledge_sources
from apps.registry.models import ModelVersion
from apps.registry.selectors import model_version_resolve

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
    streams: list  # the engine's event streams, one per choice: sync iterators, or async ones (streams_async)
    meter: Meter
    limit_headers: dict
    conversation: Conversation | None = None
    trimmed_turns: int = 0
    prompt_tokens: int = 0  # of one choice
    streams_async: bool = False  # opened on the server's event loop: read them with `arun_events`
    sources: list[Source] = field(default_factory=list)  # the knowledge passages in the prompt, cited as [n]
    reading: asyncio.Event = field(default_factory=asyncio.Event, repr=False)  # a reader (or the clean-up) took it
    exchange: list[dict] | None = None  # a form's generator/translator prompt, before knowledge: see exchange_digest
    records: list[int] = field(default_factory=list)  # the AppRun ids `_record` wrote, one per choice

    def leak_guard(self) -> LeakGuard | None:
        """A guard for one choice of an app's run, unless the caller is the app's creator (it is theirs)."""
        app, user = self.app, self.caller.user
        if app is None or (user.is_authenticated and app.creator_id == user.pk):
            return None
        guard = LeakGuard(private_texts=prompts.private_texts(app), secrets=list(getattr(app, "secret_strings", None) or []),
                          quoted_files=_quoted_files(self.sources))
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
    sources: list[Source] = field(default_factory=list)
    runs: list[int] = field(default_factory=list)  # the AppRun ids, one per choice (what feedback rates)

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
            "run": self.runs[0] if self.runs else None,
            "usage": {k: self.usage[k] for k in ("prompt_tokens", "completion_tokens")},
            "sources": [source.public() for source in self.sources],
        }


@dataclass
class RunOutcome:
    """A run read to its end (the answer without streaming)."""

    texts: list[str] = field(default_factory=list)
    notice: str | None = None
    done: Done | None = None


# --- Starting a run -------------------------------------------------------------------------------------------
def app_run_start(*, caller: Caller, app: StoreApp, inputs: dict | None = None, messages: list[dict] | None = None,
                  overrides: dict | None = None, n: int = 1, stream_async: bool = False) -> Run:
    """Run an app with the input of a form (`inputs`: pages, /api/v1) or a whole chat (`messages`: /v1, stateless).

    `overrides` are the sampling settings the caller chose (/v1), over the app's own and its prompt's.
    `stream_async`: the face streams the answer from an ASGI server (see the module's docstring)."""
    if not caller.user.is_authenticated and not app.is_builtin:
        raise InvalidRequest("Log in to use apps made by the community.", code="login_required")
    generating_app_check(app)
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
    measure = measure or prompt_measure(spec)
    user_message = prompt.messages[-1]["content"]
    exchange = prompt.messages if messages is None and turns is None else None
    prompt, sources = _with_knowledge(app, prompt, measure, max_tokens=overrides.get("max_tokens") or prompt.max_tokens)
    params = replace(_app_sampling(app, prompt), **overrides)
    if sources:
        # The repetition penalty is there to keep an answer from looping on its own words; over the prompt too (as
        # transformers' counts it) it pushes the answer away from the passages' names and figures it should quote.
        params = replace(params, penalize_prompt=False)
    request = GenerationRequest(model=spec, messages=prompt.messages, params=params)
    run = _run_start(caller=caller, app=app, request=request, measure=measure, n=n,
                     caller_max_tokens="max_tokens" in overrides, trimmed_turns=prompt.trimmed_turns,
                     stream_async=stream_async)
    run.sources, run.exchange = sources, exchange
    if turns is not None:
        run.conversation = chat_turns_write(app=app, user=caller.user, turns=turns, message=user_message)
    return run


def generating_app_check(app: StoreApp) -> None:
    """A classifier app labels text (`app_classify`); asked to generate (/v1's completions), it says where it answers."""
    if app.kind == StoreApp.Kind.CLASSIFIER:
        raise InvalidRequest(f"app:{app.slug} is a classifier app: it labels text and does not generate. Classify "
                             f"with POST /api/v1/apps/{app.slug}/runs/ and {{\"text\": ...}}.", param="model",
                             code="model_is_classifier")


def _with_knowledge(app: StoreApp, prompt: prompts.Prompt, measure, *, max_tokens: int) -> tuple[prompts.Prompt, list[Source]]:
    """The app's knowledge passages for the newest turns, in the room the context has left after the instructions,
    the history and the answer (the same on every face: pages, /api/v1 and /v1 `app:` calls)."""
    if app.kind == StoreApp.Kind.TRANSLATOR or not app_has_knowledge(app):
        return prompt, []
    budget = measure.context - max_tokens - measure.count(prompt.messages) - prompts.KNOWLEDGE_MARGIN_TOKENS
    sources = knowledge_sources(app=app, query=prompts.knowledge_query(prompt.messages), budget=budget)
    return prompts.with_knowledge(prompt, sources), sources


def _quoted_files(sources: list[Source]) -> dict[str, list[str]]:
    """The passages of each file that the prompt holds: what an answer could copy out of it."""
    files: dict[str, list[str]] = {}
    for source in sources:
        files.setdefault(source.file, []).append(source.text)
    return files


def model_run_start(*, caller: Caller, reference: str, params: SamplingParams, messages: list[dict] | None = None,
                    prompt: str | None = None, n: int = 1, stream_async: bool = False) -> Run:
    """Run a registry model (by id, `<id>@<alias>` or `<id>@v<N>`) on a chat or a plain prompt (/v1)."""
    if messages is not None:
        for index, message in enumerate(messages):
            prompts.text_check(message["content"], f"messages[{index}].content")
    else:
        prompts.text_check(prompt, "prompt")
    version = model_version_resolve(reference=reference, user=caller.user)
    if version.task == ModelVersion.Task.CLASSIFIER:
        raise InvalidRequest(f"{reference} is a classifier: it labels text and does not generate. Build a classifier "
                             "app on it and classify with POST /api/v1/apps/<slug>/runs/.", param="model",
                             code="model_is_classifier")
    spec = model_spec_for(version)
    request = GenerationRequest(model=spec, messages=messages, prompt=prompt, params=params)
    return _run_start(caller=caller, app=None, request=request, measure=prompt_measure(spec), n=n,
                      caller_max_tokens=params.max_tokens is not None, stream_async=stream_async)


@dataclass
class Classification:
    """A classifier app's run: the label, every label's probability, and what it cost."""

    label: str
    scores: dict[str, float]
    usage: dict
    run: int
    limit_headers: dict = field(default_factory=dict)

    def public(self) -> dict:
        return {"label": self.label, "scores": self.scores, "usage": self.usage, "run": self.run}


def app_classify(*, caller: Caller, app: StoreApp, text) -> Classification:
    """Run a classifier app on one text: one forward pass, no stream. The same steps as a generation (resolve,
    validate, admit, run, record one AppRun with the text's tokens as its prompt); empty text is refused before
    admission, over-long text by the engine (a 400 that names the classifier's context)."""
    if not caller.user.is_authenticated and not app.is_builtin:
        raise InvalidRequest("Log in to use apps made by the community.", code="login_required")
    version = model_version_resolve(reference=app.model_reference, user=app.creator)
    if version.task != ModelVersion.Task.CLASSIFIER:
        raise InvalidRequest(_("This app's model is not a classifier: its creator must pick one in the builder."),
                             param="model", code="model_not_classifier")
    prompts.text_check(text, "text")
    if not text.strip():
        raise InvalidRequest(_("Type a text to classify."), param="text")
    who = {"user": caller.user, "api_key": caller.api_key, "address": caller.address}
    meter = Meter(quotas=[], slots=[])
    meter.quotas, headers = quotas_take(**who)
    try:
        [result] = classification_run(spec=model_spec_for(version), texts=[text])
    except BaseException:
        meter.refuse()  # nothing was served: the request goes back to the quota
        raise
    meter.start(result["tokens"])
    record = AppRun.objects.create(
        app=app, model=version.reference, user=caller.user if caller.user.is_authenticated else None,
        api_key=caller.api_key, prompt_tokens=result["tokens"], completion_tokens=0, finish_reason="stop",
    )
    return Classification(label=result["label"], scores=result["scores"], run=record.pk, limit_headers=headers,
                          usage={"prompt_tokens": result["tokens"], "completion_tokens": 0})


def _run_start(*, caller: Caller, app, request: GenerationRequest, measure, n: int, caller_max_tokens: bool,
               trimmed_turns: int = 0, stream_async: bool = False) -> Run:
    """Bound the request, admit it (quotas, stream slots), start its n streams. Nothing is written before this.

    The prompt is counted (on the remote engine, a round trip to the model server's /tokenize) while the admission's
    writes run: a request refused by either serves nothing, and one the count refuses (a prompt longer than the
    context) gives its request back to the quota.

    With `stream_async` the streams are opened on the event loop of the ASGI server this thread runs under (a sync
    view runs in a thread of `sync_to_async`; `async_to_sync` hands the coroutine back to that outer loop), which
    is the loop that will read them."""
    request = replace(request, params=request_check(request, n=n))
    counting = _counter_pool().submit(contextvars.copy_context().run, measure.request_tokens, request)
    who = {"user": caller.user, "api_key": caller.api_key, "address": caller.address}
    # Slots first: a caller with too many answers streaming is refused without spending a request of the quota.
    meter = Meter(quotas=[], slots=stream_slots_take(**who))
    opening = False
    try:
        meter.quotas, headers = quotas_take(**who)
        prompt_tokens = counting.result()
        request = request_bound(request, prompt_tokens=prompt_tokens, context=measure.context,
                                caller_max_tokens=caller_max_tokens)
        engine = engine_get()
        params = request.params
        choices = [replace(request, params=replace(params, seed=params.seed + i) if params.seed is not None else params)
                   for i in range(n)]
        gone = client_gone() if stream_async else None
        if gone is not None and gone.is_set():
            raise ClientGone("The client left before the answer started.")
        opening = True
        try:  # all n start now, so the engine decodes them together
            if stream_async:
                streams, loop = async_to_sync(_astreams_open)(engine, choices)
            else:
                streams = [engine.stream(choice) for choice in choices]
        except EngineOverloaded as exc:  # the model server's queue is full: a busy answer people can act on
            raise EngineOverloaded(_("The model is busy: try again in %(seconds)s s.") % {"seconds": exc.retry_after},
                                   retry_after=exc.retry_after) from exc
    except BaseException as exc:
        # Nothing was served: refused before the streams opened, or by the engine (busy, unavailable), or nobody is
        # left to serve. Anything else going wrong while opening may have started a generation: it stays counted.
        if not opening or isinstance(exc, InferenceError | ClientGone):
            meter.refuse()
        else:
            meter.release()
        raise
    meter.start(prompt_tokens * n)
    run = Run(caller=caller, app=app, request=request, streams=streams, meter=meter, limit_headers=headers,
              trimmed_turns=trimmed_turns, prompt_tokens=prompt_tokens, streams_async=stream_async)
    if stream_async:
        # Its own context: not the request's, which ends with the request (and its thread with it).
        loop.call_soon_threadsafe(_keep, _arun_unread(run, gone), context=contextvars.Context())
    return run


@functools.cache
def _counter_pool() -> ThreadPoolExecutor:
    """Threads that count prompts beside the admission's writes (each waits on the model server's /tokenize)."""
    return ThreadPoolExecutor(max_workers=settings.WEB_THREADS, thread_name_prefix="count")


async def _astreams_open(engine, requests: list[GenerationRequest]) -> tuple[list[AsyncIterator], asyncio.AbstractEventLoop]:
    """Open the streams together; when one is refused, close those that opened and raise the first refusal."""
    opened = await asyncio.gather(*(engine.astream(r) for r in requests), return_exceptions=True)
    refused = [o for o in opened if isinstance(o, BaseException)]
    if refused:
        for stream in opened:
            if not isinstance(stream, BaseException):
                await stream.aclose()
        raise refused[0]
    return opened, asyncio.get_running_loop()


UNREAD_SECONDS = 30  # a run opened on the loop and not read by then was dropped by the server


async def _arun_unread(run: Run, gone: asyncio.Event | None) -> None:
    """Close a run that nobody reads. A client that leaves while the view still runs gets the response cancelled
    before it is read (the view finishes in its thread), so `arun_events` never starts: as soon as the handler says
    the client is `gone` (or after UNREAD_SECONDS, for a response lost some other way) its streams are closed here,
    its slots freed and what it cost recorded, as for a client that left."""
    waits = [asyncio.ensure_future(event.wait()) for event in (run.reading, gone) if event is not None]
    try:
        await asyncio.wait(waits, timeout=UNREAD_SECONDS, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    if run.reading.is_set():
        return
    run.reading.set()  # claimed: a reader that comes after all finds nothing to read
    if gone is None or not gone.is_set():
        logger.warning("a run of %s nobody read in %d s was closed", run.request.model.key, UNREAD_SECONDS)
    for stream in run.streams:
        await stream.aclose()
    await asyncio.to_thread(_run_cut_unread, run)


def _run_cut_unread(run: Run) -> None:
    try:
        run.meter.release()
        _record_partial(run)
    finally:
        connections.close_all()  # a thread of the loop's pool: its connections end with this work


_background: set[asyncio.Task] = set()


def _keep(coroutine) -> None:
    """Run `coroutine` as a task of the running loop, kept until it ends (the loop holds tasks only weakly)."""
    task = asyncio.ensure_future(coroutine)
    _background.add(task)
    task.add_done_callback(_background.discard)


def _app_sampling(app: StoreApp, prompt: prompts.Prompt) -> SamplingParams:
    return SamplingParams(
        max_tokens=prompt.max_tokens,
        temperature=app.temperature if prompt.temperature is None else prompt.temperature,
        top_p=app.top_p,
        repetition_penalty=app.repetition_penalty,
        stop=prompt.stop,
    )


# --- Reading a run ----------------------------------------------------------------------------------------------
class _RunReader:
    """What `run_events` and `arun_events` share: the engine's events of each choice in, the run's events out
    (the leak guard, the tokens counted for billing, each choice's result, the notices). No waiting and no
    database here: the loops wait on the streams and do the meter's writes and the recording each in their way."""

    def __init__(self, run: Run):
        self.run = run
        self.results: list[GenerationResult] = []
        self.meter_due = False  # the meter has billing or a heartbeat to write (`Meter.flush`)
        self.stopped = False  # the leak guard stopped this choice: close its stream

    def opening(self) -> list[Notice]:
        if not self.run.trimmed_turns:
            return []
        return [Notice(f"The conversation is long: the {self.run.trimmed_turns} oldest exchange(s) were left out to fit "
                       "the model's context.")]

    def choice_begin(self) -> None:
        self.index = len(self.results)
        self.guard, self.produced, self.result, self.stopped = self.run.leak_guard(), 0, None, False

    def feed(self, event) -> list[Notice | Delta]:
        out, guard = [], self.guard
        self.meter_due = False
        if event.delta:
            self.meter_due = self.run.meter.count()
            self.produced += 1
            text = guard.feed(event.delta) if guard else event.delta
            if text:
                out.append(Delta(self.index, text))
            if guard and guard.tripped:
                self.result = _filtered(self.run, guard, self.produced)
                self.stopped = True  # the engine stops generating it at once
                out.append(Notice(QUOTE_NOTICE if guard.reason == "knowledge" else LEAK_NOTICE))
                return out
        if event.result is not None:
            self.result = event.result
            tail = guard.flush() if guard else ""
            if tail:
                out.append(Delta(self.index, tail))
            if guard and guard.tripped:  # its last words made the quote too long
                self.result = _filtered(self.run, guard, self.produced)
                out.append(Notice(QUOTE_NOTICE))
        return out

    def choice_end(self) -> ChoiceEnd:
        if self.result is None:
            raise InferenceError("The generation ended without a result.")
        self.results.append(self.result)
        return ChoiceEnd(self.index, self.result)

    def cut(self) -> None:
        """The run stopped reading (ended, failed or cancelled): free its slots; record what was sent, unless every
        choice ended (then `_record` records the whole run)."""
        self.run.meter.release()
        if len(self.results) < len(self.run.streams):
            _record_partial(self.run)

    def done(self) -> Done:
        return Done(self.results, self.run.conversation, self.run.sources, runs=self.run.records)


def run_events(run: Run) -> Iterator[Notice | Delta | ChoiceEnd | Done]:
    """The run's events; once every choice has ended, the run is recorded and `Done` comes last.

    Tokens are billed as they come. Closing the iterator early (a client that went away) frees the engine's slots
    at once and records what was sent, billed, with finish_reason `cancelled`."""
    reader = _RunReader(run)
    try:
        yield from reader.opening()
        for stream in run.streams:
            reader.choice_begin()
            for event in stream:
                out = reader.feed(event)
                if reader.meter_due:
                    run.meter.flush()
                if reader.stopped:
                    stream.close()
                yield from out
                if reader.stopped:
                    break
            yield reader.choice_end()
    finally:
        for stream in run.streams:
            stream.close()
        reader.cut()
    _record(run, reader.results)
    yield reader.done()


async def arun_events(run: Run) -> AsyncIterator[Notice | Delta | ChoiceEnd | Done]:
    """`run_events` on the event loop, for a run whose streams were opened there (`stream_async`).

    Cancelled (the ASGI server cancels the response of a client that went away) or closed early, it closes the
    engine's streams at once (a model server then stops generating) and records what was sent, billed; that
    clean-up is shielded from a second cancellation."""
    if run.reading.is_set():
        raise InferenceError("The answer was dropped: it was not read in time. Try again.")
    run.reading.set()
    reader = _RunReader(run)
    try:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            # The client left while the view still ran: the server cancelled the response, and `sync_to_async`
            # let the view finish anyway. Nobody will read this answer.
            raise asyncio.CancelledError
        for event in reader.opening():
            yield event
        for stream in run.streams:
            reader.choice_begin()
            async for event in stream:
                out = reader.feed(event)
                if reader.meter_due:
                    await sync_to_async(run.meter.flush)()
                if reader.stopped:
                    await stream.aclose()
                for item in out:
                    yield item
                if reader.stopped:
                    break
            yield reader.choice_end()
    finally:
        await asyncio.shield(asyncio.ensure_future(_arun_cut(run, reader)))
    await sync_to_async(_record)(run, reader.results)
    yield reader.done()


async def _arun_cut(run: Run, reader: _RunReader) -> None:
    for stream in run.streams:
        await stream.aclose()
    await sync_to_async(reader.cut)()


def run_stream(run: Run) -> Iterator | AsyncIterator:
    """The run's events as its face streams them: `arun_events` for streams opened on the event loop, else
    `run_events`."""
    return arun_events(run) if run.streams_async else run_events(run)


def run_collect(run: Run) -> RunOutcome:
    """The whole answer at once (non-streaming faces: their runs are sync)."""
    if run.streams_async:
        raise TypeError("run_collect reads a sync run; this one streams on the event loop (arun_events)")
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


def run_app_events(run: Run) -> Iterator[dict] | AsyncIterator[dict]:
    """The events of an app's run as pages and /api/v1 send them: `{"delta"}`, `{"notice"}`, then `{"done", ...}`
    (async when the run streams on the event loop)."""
    return map_events(run_stream(run), _app_event)


def _app_event(event) -> list[dict]:
    if isinstance(event, Delta):
        return [{"delta": event.text}]
    if isinstance(event, Notice):
        return [{"notice": event.text}]
    if isinstance(event, Done):
        return [{"done": True, **event.app_summary()}]
    return []


LEAK_NOTICE = "The answer was stopped: it was giving away the app's private instructions."
QUOTE_NOTICE = "The answer was stopped: it was copying too much of the app's knowledge files."


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
        records = AppRun.objects.bulk_create(
            AppRun(app=run.app, model=r.model, user=user, api_key=run.caller.api_key, conversation=run.conversation,
                   prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens, finish_reason=r.finish_reason,
                   text_digest=exchange_digest(run.exchange, r.text) if run.exchange is not None and user else "")
            for r in results
        )
    run.records = [r.pk for r in records]
    run.meter.settle(sum(r.total_tokens for r in results))


def exchange_digest(messages: list[dict], answer: str) -> str:
    """A fingerprint of a generator's or translator's exchange (its prompt and one answer), kept on its AppRun
    instead of the text (runs keep no text): whoever rates the run later sends the text back, and the fingerprint
    shows it is that run's (apps/feedback)."""
    payload = json.dumps([messages, answer.strip()], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _record_partial(run: Run) -> None:
    """A run that did not end (the client left, the engine failed): what was sent, billed and counted as usage."""
    completion = run.meter.settle_partial()
    AppRun.objects.create(
        app=run.app, model=run.request.model.key, user=run.caller.user if run.caller.user.is_authenticated else None,
        api_key=run.caller.api_key, conversation=run.conversation, prompt_tokens=run.meter.prompt_tokens,
        completion_tokens=completion, finish_reason="cancelled",
    )

"""Writes of feedback: rate an answer (or change or take back a rating), and export one's rated answers as a
training file that goes through the same upload and validation as any other (apps.tuning)."""

from __future__ import annotations

import json

from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from apps.catalog.models import StoreApp
from apps.chat import prompts
from apps.chat.models import AppRun, Message
from apps.chat.services import exchange_digest
from apps.core.errors import InvalidRequest, NotFound
from apps.feedback.models import Feedback
from apps.feedback.selectors import feedback_examples, may_keep_instructions
from apps.tuning.models import TrainingFile
from apps.tuning.services import training_file_create
from apps.tuning.trainer.data import MIN_EXAMPLES

MAX_CORRECTION_CHARS = prompts.MAX_INPUT_CHARS


def _rating(value) -> str:
    if value not in Feedback.Rating.values:
        raise InvalidRequest("rating must be 'up' or 'down'.", param="rating")
    return value


def _correction(value) -> str:
    if value in (None, ""):
        return ""
    prompts.text_check(value, "correction")
    if len(value) > MAX_CORRECTION_CHARS:
        raise InvalidRequest(f"correction is too long ({len(value)} characters; at most {MAX_CORRECTION_CHARS}).",
                             param="correction")
    return value.strip()


def _owned(model, *, pk, name: str, related: str, **lookups):
    """The caller's own row of `model` by id: someone else's, like one that does not exist, is a 404."""
    try:
        pk = int(pk)
    except (TypeError, ValueError):
        raise InvalidRequest(f"{name} must be a {name}'s id (a number).", param=name) from None
    row = model.objects.filter(pk=pk, **lookups).select_related(related).first()
    if row is None:
        raise NotFound(f"This {name} does not exist.", code=f"{name}_not_found", param=name)
    return row


def feedback_rate(*, user, rating, correction=None, message=None, run=None, inputs=None, answer=None) -> tuple[Feedback, bool]:
    """Rate one of the caller's answers: a chat `message` (its id) or a generator's or translator's `run` (its id).

    A run keeps no text, so its first rating comes with the form's `inputs` and the `answer` as the page showed
    them; they must be that run's (its fingerprint, `exchange_digest`), and are then kept on the feedback. Rating
    an answer again changes the rating. Returns (feedback, created)."""
    rating, correction = _rating(rating), _correction(correction)
    if (message is None) == (run is None):
        raise InvalidRequest("Rate either a message or a run.", param="message")
    if message is not None:
        target = _owned(Message, pk=message, name="message", related="conversation", conversation__user=user)
        if target.role != Message.Role.ASSISTANT:
            raise InvalidRequest("Only the assistant's answers can be rated.", param="message")
        found, fields = Feedback.objects.filter(message=target).first(), {"message": target, "app_id": target.conversation.app_id}
    else:
        target = _owned(AppRun, pk=run, name="run", related="app", user_id=user.pk)
        found = Feedback.objects.filter(run=target).first()
        fields = {"run": target, "app": target.app} if found else {"run": target, "app": target.app,
                                                                   **_run_exchange(user, target, inputs, answer)}
    if found is not None:
        return feedback_update(feedback=found, rating=rating, correction=correction), False
    try:
        with transaction.atomic():
            return Feedback.objects.create(user=user, rating=rating, correction=correction or "", **fields), True
    except IntegrityError:  # the same answer rated twice at once: the other rating won, this one changes it
        found = Feedback.objects.get(**{k: v for k, v in fields.items() if k in ("message", "run")})
        return feedback_update(feedback=found, rating=rating, correction=correction), False


def _run_exchange(user, run: AppRun, inputs, answer) -> dict:
    """The text of a rated run: checked against its fingerprint, and what of it the rater may keep."""
    app = run.app
    if app is None or app.kind == StoreApp.Kind.CHATBOT:
        raise InvalidRequest("Rate a chat's answers by their message, not by their run.", param="run")
    if not run.text_digest:
        raise InvalidRequest("This run's text cannot be rated (it was not a finished answer of a form).", param="run")
    if not isinstance(inputs, dict) or not isinstance(answer, str):
        raise InvalidRequest("Rating a run needs the inputs it ran with and its answer.", param="inputs")
    messages = _form_prompt(app, inputs).messages
    if exchange_digest(messages, answer) != run.text_digest:
        raise InvalidRequest("These are not the inputs and answer of that run (or the app changed since).", param="answer")
    if may_keep_instructions(user=user, app=app):
        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        return {"system": system, "prompt": messages[-1]["content"], "answer": answer.strip()}
    return {"prompt": _own_words(app, inputs), "answer": answer.strip()}


def _form_prompt(app: StoreApp, inputs: dict) -> prompts.Prompt:
    """The prompt a form's input builds, as the run service builds it (apps.chat.services.app_run_start)."""
    if app.kind == StoreApp.Kind.TRANSLATOR:
        return prompts.translator_prompt(app, text=inputs.get("text", ""), source=inputs.get("source", ""),
                                         target=inputs.get("target", ""))
    return prompts.generator_prompt(app, inputs.get("fields") or {})


def _own_words(app: StoreApp, inputs: dict) -> str:
    """The rater's input without another creator's words around it: the text and languages of a translation, the
    filled fields of a generator (label: value)."""
    if app.kind == StoreApp.Kind.TRANSLATOR:
        source = inputs.get("source") or prompts.UNKNOWN_SOURCE
        return f"Translate from {source} into {inputs['target']}:\n\n{inputs['text'].strip()}"
    fields = inputs.get("fields") or {}
    return "\n".join(f"{spec['label']}: {str(fields[spec['name']]).strip()}" for spec in app.input_fields
                     if str(fields.get(spec["name"], "")).strip())


def feedback_update(*, feedback: Feedback, rating=None, correction=None) -> Feedback:
    """Change a rating or its correction (None leaves one as it is; an empty correction removes it)."""
    if rating is not None:
        feedback.rating = _rating(rating)
    if correction is not None:
        feedback.correction = _correction(correction)
    feedback.save(update_fields=["rating", "correction", "updated_at"])
    return feedback


def feedback_delete(*, feedback: Feedback) -> None:
    feedback.delete()


def feedback_export(*, user) -> tuple[TrainingFile, int]:
    """The caller's rated answers as a chat JSONL training file in their files, validated like an upload.

    Refused with a clear message below the examples a training file needs (MIN_EXAMPLES). Returns the file and
    how many examples it holds."""
    examples = feedback_examples(user=user)
    if len(examples) < MIN_EXAMPLES:
        raise InvalidRequest(
            f"You have {len(examples)} usable rated answer(s); a training file needs at least {MIN_EXAMPLES}. Rate more "
            "answers: a thumbs-up counts, and a thumbs-down counts once you write the better answer.",
            code="too_few_examples",
        )
    lines = "".join(json.dumps(example, ensure_ascii=False) + "\n" for example in examples)
    name = f"feedback-{timezone.now():%Y%m%d-%H%M%S}.jsonl"
    return training_file_create(owner=user, upload=ContentFile(lines.encode(), name=name)), len(examples)


def customize_url(training_file: TrainingFile) -> str:
    """The customize page with this file chosen in the job form: one click from feedback to a fine-tune."""
    return f"{reverse('tuning:customize')}?training_file={training_file.public_id}#job-form"

"""Reads of feedback: the rater's own (one item, a list, the training examples they export) and, for an app's
creator, the counts on their app and nothing else."""

from __future__ import annotations

from django.db.models import Count, Q

from apps.chat.models import Message
from apps.chat.prompts import framed_instructions
from apps.core.errors import InvalidRequest, NotFound
from apps.feedback.models import Feedback


def access_feedback(*, user, feedback_id) -> Feedback:
    """The caller's own feedback, or NotFound (someone else's is a 404 on every face)."""
    try:
        pk = int(feedback_id)
    except (TypeError, ValueError):
        raise InvalidRequest("feedback must be a feedback's id (a number).", param="feedback") from None
    feedback = Feedback.objects.filter(pk=pk, user=user).select_related("app").first() if user.is_authenticated else None
    if feedback is None:
        raise NotFound("This feedback does not exist.", code="feedback_not_found")
    return feedback


def feedback_list(*, user, conversation=None, app=None):
    """The caller's feedback, newest first; `conversation` (an id) or `app` (a slug) narrow it."""
    items = Feedback.objects.filter(user=user).select_related("app", "message")
    if conversation not in (None, ""):
        try:
            conversation = int(conversation)
        except (TypeError, ValueError):
            raise InvalidRequest("conversation must be a conversation's id (a number).", param="conversation") from None
        # An id past what the database's integers hold names no conversation (SQLite would overflow on it).
        items = items.filter(message__conversation_id=conversation) if 0 < conversation < 2**63 else items.none()
    if app:
        items = items.filter(app__slug=app)
    return items


def app_feedback_counts(*, app) -> dict:
    """What an app's creator sees of the ratings on it: how many up and down, never whose or on what."""
    return Feedback.objects.filter(app=app).aggregate(
        up=Count("id", filter=Q(rating=Feedback.Rating.UP)), down=Count("id", filter=Q(rating=Feedback.Rating.DOWN)),
    )


def may_keep_instructions(*, user, app) -> bool:
    """Whether the rater's exports may hold the app's instructions: a built-in's are no secret and one's own app's
    are one's own; another creator's never leave the store."""
    return app.is_builtin or app.creator_id == user.pk


def feedback_examples(*, user) -> list[dict]:
    """The caller's rated answers as chat training examples (`{"messages": [...]}`), oldest first.

    A correction replaces the rated answer; a thumbs-down without one is left out. A chat's example holds the
    conversation up to the rated answer, its earlier answers corrected where the rater corrected them, and starts
    after the last earlier answer they rated down without a correction (no example teaches a bad answer). The
    app's instructions come first only where `may_keep_instructions`."""
    items = list(Feedback.objects.filter(user=user).select_related("app", "message").order_by("created_at", "id"))
    by_message = {f.message_id: f for f in items if f.message_id}
    examples = []
    for item in items:
        answer = (item.correction or (item.answer if item.run_id else item.message.content)).strip()
        if (item.rating == Feedback.Rating.DOWN and not item.correction) or not answer:
            continue
        keep = may_keep_instructions(user=user, app=item.app)
        if item.run_id:
            system = item.system if keep else ""
            turns = [{"role": "user", "content": item.prompt}]
        else:
            system = framed_instructions(item.app) if keep and item.app.instructions else ""
            turns = _chat_turns(item.message, by_message)
        if not turns:
            continue
        head = [{"role": "system", "content": system}] if system else []
        examples.append({"messages": [*head, *turns, {"role": "assistant", "content": answer}]})
    return examples


def _chat_turns(message: Message, by_message: dict[int, Feedback]) -> list[dict]:
    """The turns before `message` in its conversation, as the rater's feedback corrected them."""
    turns = []
    earlier = Message.objects.filter(conversation_id=message.conversation_id, created_at__lte=message.created_at,
                                     pk__lt=message.pk).order_by("created_at", "id")
    for m in earlier:
        rated = by_message.get(m.pk)
        if m.role == Message.Role.ASSISTANT and rated is not None:
            if rated.correction:
                turns.append({"role": "assistant", "content": rated.correction})
                continue
            if rated.rating == Feedback.Rating.DOWN:
                turns = []  # a bad answer nobody fixed: the example starts after it
                continue
        turns.append({"role": m.role, "content": m.content})
    return turns

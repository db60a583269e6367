"""Conversations with chatbot apps: reading the turns a run continues, and writing them.

A run reads its history first (`chat_turns_read`, no writes), so that bad input and a refused quota leave the
conversation as it was; only an admitted run writes (`chat_turns_write`).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction

from apps.chat import prompts
from apps.chat.models import Conversation, Message
from apps.core.errors import InvalidRequest, NotFound

MAX_ANON_HISTORY = 20


def access_conversation(*, user, conversation_id) -> Conversation:
    """The caller's own conversation, or NotFound (another user's conversation is a 404 on every face)."""
    try:
        pk = int(conversation_id)
    except (TypeError, ValueError):
        raise InvalidRequest("conversation must be a conversation's id (a number).", param="conversation") from None
    conversation = (
        Conversation.objects.filter(pk=pk, user=user).select_related("app").first() if user.is_authenticated else None
    )
    if conversation is None:
        raise NotFound("This conversation does not exist.", code="conversation_not_found", param="conversation")
    return conversation


@dataclass
class ChatTurns:
    """What a chat run continues: the earlier turns, the new user message, and what it replaces."""

    history: list[dict]
    message: str
    conversation: Conversation | None = None  # None: a new conversation (or an anonymous visitor's)
    replace_from: Message | None = None  # regenerate / edit: this message and every later one are replaced
    keep: bool = True  # False for anonymous visitors: nothing is stored


def chat_turns_read(*, app, user, inputs: dict) -> ChatTurns:
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
        return ChatTurns(turns, message, keep=False)
    if not inputs.get("conversation"):
        return ChatTurns([], message)
    conversation = access_conversation(user=user, conversation_id=inputs["conversation"])
    if conversation.app_id != app.pk:
        raise NotFound("This conversation belongs to another app.", param="conversation")
    messages = list(conversation.messages.all())
    replace_from = None
    if inputs.get("regenerate"):
        replace_from = next((m for m in reversed(messages) if m.role == Message.Role.USER), None)
        if replace_from is None:
            raise InvalidRequest("There is nothing to regenerate yet.")
        message = replace_from.content
    elif inputs.get("edit_message"):
        replace_from = next((m for m in messages if str(m.pk) == str(inputs["edit_message"]) and m.role == Message.Role.USER), None)
        if replace_from is None:
            raise NotFound("That message is not in this conversation.", param="edit_message")
    kept = messages if replace_from is None else messages[: messages.index(replace_from)]
    history = [{"role": m.role, "content": m.content} for m in kept]
    return ChatTurns(history, message, conversation=conversation, replace_from=replace_from)


@transaction.atomic
def chat_turns_write(*, app, user, turns: ChatTurns, message: str) -> Conversation | None:
    """Replace what a regenerate or edit replaces, start the conversation if new, store the user's message."""
    if not turns.keep:
        return None
    conversation = turns.conversation
    if turns.replace_from is not None:
        conversation.messages.filter(created_at__gte=turns.replace_from.created_at, pk__gte=turns.replace_from.pk).delete()
    if conversation is None:
        conversation = Conversation.objects.create(app=app, user=user, title=(message.strip()[:60] or "New chat"))
    Message.objects.create(conversation=conversation, role=Message.Role.USER, content=message)
    return conversation


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

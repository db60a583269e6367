"""The account page's panel of kept checkpoints: the storage they take against the user's cap."""

from django import template

from apps.tuning.selectors import checkpoint_storage

register = template.Library()


@register.inclusion_tag("tuning/_checkpoint_storage.html", takes_context=True)
def checkpoint_storage_panel(context):
    return {"storage": checkpoint_storage(user=context["request"].user)}

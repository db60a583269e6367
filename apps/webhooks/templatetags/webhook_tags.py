"""The account page's webhooks panel: the caller's endpoints, a form for a new one, and the notice of an endpoint
the store disabled after failures."""

from django import template

from apps.webhooks import selectors
from apps.webhooks.forms import EndpointForm

register = template.Library()


@register.inclusion_tag("webhooks/panel.html", takes_context=True)
def webhooks_panel(context):
    user = context["request"].user
    endpoints = list(selectors.endpoint_list(user=user))
    return {
        "endpoints": endpoints,
        "disabled": [e for e in endpoints if not e.enabled and e.disabled_reason],
        "form": EndpointForm(auto_id="id_webhook_%s"),
        "csrf_token": context.get("csrf_token"),
    }

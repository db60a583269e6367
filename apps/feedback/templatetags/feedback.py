"""`{% app_feedback_counts app as counts %}`: the thumbs on an app, for its creator's builder page (counts only).
A tag, so that the catalog's views need not ask this higher app."""

from django import template

from apps.feedback.selectors import app_feedback_counts as counts_of

register = template.Library()


@register.simple_tag
def app_feedback_counts(app) -> dict:
    return counts_of(app=app)

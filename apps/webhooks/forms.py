from django import forms
from django.utils.translation import gettext_lazy as _

from apps.webhooks.models import JOB_EVENT_TYPES


class EndpointForm(forms.Form):
    url = forms.CharField(label=_("URL"), max_length=2000, widget=forms.URLInput(attrs={"placeholder": "https://example.com/webhooks"}),
                          help_text=_("The store POSTs signed events here: an https:// address on the public internet."))
    description = forms.CharField(label=_("Description"), max_length=200, required=False)
    event_types = forms.MultipleChoiceField(label=_("Events"), choices=[(e, e) for e in JOB_EVENT_TYPES],
                                            initial=list(JOB_EVENT_TYPES), widget=forms.CheckboxSelectMultiple)


class EndpointEditForm(EndpointForm):
    enabled = forms.BooleanField(label=_("Enabled"), required=False,
                                 help_text=_("Enabling a disabled endpoint starts its count of failures again."))

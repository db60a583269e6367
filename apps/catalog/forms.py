from django import forms
from django.utils.translation import gettext_lazy as _

from apps.catalog.models import Category, Report, StoreApp


class AppForm(forms.ModelForm):
    conversation_starters = forms.CharField(
        label=_("Conversation starters"), required=False, widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_("One per line, up to six: buttons that start a chat."),
    )
    secret_strings = forms.CharField(
        label=_("Secret strings"), required=False, widget=forms.Textarea(attrs={"rows": 2}),
        help_text=_("One per line: codes or names from the instructions that an answer must never contain. "
                    "An answer that would give one away is stopped."),
    )
    model_reference = forms.ChoiceField(label=_("Model"))
    avatar = forms.FileField(label=_("Avatar"), required=False)  # checked and re-encoded by avatars.avatar_process

    class Meta:
        model = StoreApp
        fields = [
            "name", "short_description", "description", "avatar", "category", "kind", "instructions", "secret_strings",
            "prompt_template", "conversation_starters", "model_reference", "temperature", "top_p", "max_tokens", "repetition_penalty",
            "remix_with_instructions",
        ]
        widgets = {
            "description": forms.Textarea(attrs={"rows": 3}),
            "instructions": forms.Textarea(attrs={"rows": 6}),
            "prompt_template": forms.Textarea(attrs={"rows": 3}),
            "temperature": forms.NumberInput(attrs={"step": "0.05", "min": 0, "max": 2}),
            "top_p": forms.NumberInput(attrs={"step": "0.05", "min": 0.01, "max": 1}),
            "repetition_penalty": forms.NumberInput(attrs={"step": "0.05", "min": 1, "max": 2}),
        }
        help_texts = {
            "avatar": _("Optional. PNG, JPEG, WebP or GIF, up to 1 MB, at least 64 pixels; shown as a 256-pixel square."),
            "instructions": _("What the app should do and how: the model reads this first. Users never see it."),
            "kind": _("Chatbot: a conversation. Text generator: a form filled into the prompt template. Translator: text in, translation out."),
        }

    def __init__(self, *args, model_choices, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model_reference"].choices = model_choices
        self.fields["category"].queryset = Category.objects.all()
        if self.instance.pk:
            self.initial["conversation_starters"] = "\n".join(self.instance.conversation_starters)
            self.initial["secret_strings"] = "\n".join(self.instance.secret_strings)

    def clean_secret_strings(self):
        return [line.strip() for line in self.cleaned_data["secret_strings"].splitlines() if line.strip()]

    def clean_conversation_starters(self):
        return [line.strip() for line in self.cleaned_data["conversation_starters"].splitlines() if line.strip()]

    def clean(self):
        data = super().clean()
        if data.get("kind") == StoreApp.Kind.GENERATOR and "{" not in (data.get("prompt_template") or ""):
            self.add_error("prompt_template", _("A text generator needs a prompt template with at least one {field}."))
        if data.get("kind") == StoreApp.Kind.TRANSLATOR:
            self.add_error("kind", _("Translator apps are built in; build a chatbot that translates instead."))
        return data


class PublishForm(forms.Form):
    visibility = forms.ChoiceField(label=_("Who can use it"), choices=StoreApp.Visibility.choices)


class ReviewForm(forms.Form):
    rating = forms.TypedChoiceField(label=_("Rating"), coerce=int, choices=[(i, "★" * i) for i in range(5, 0, -1)])
    text = forms.CharField(label=_("Your review"), required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 3}))


class ReportForm(forms.Form):
    reason = forms.ChoiceField(label=_("Reason"), choices=Report.Reason.choices)
    details = forms.CharField(label=_("Details"), required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))

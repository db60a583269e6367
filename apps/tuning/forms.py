from django import forms
from django.utils.translation import gettext_lazy as _

from apps.tuning.hyperparameters import HYPERPARAMETERS, PAGE_NAMES
from apps.tuning.models import FineTuningJob, TrainingFile
from apps.tuning.selectors import training_file_list
from apps.tuning.trainer.presets import DEFAULT_PRESET, PRESETS, TOKENIZERS, parameter_count

SCRATCH_OPTIONS = ("preset", "tokenizer")


class UploadForm(forms.Form):
    file = forms.FileField(
        label=_("Training data"),
        help_text=_("JSONL with one chat per line ({\"messages\": [...]}), or prompt/completion pairs; "
                    "or a .txt file of plain text for continued pre-training or pre-training from scratch."),
    )


class JobForm(forms.Form):
    """A job's settings; its hyperparameter fields (a number or `auto` each) come from apps.tuning.hyperparameters."""

    training_file = forms.ChoiceField(label=_("Training file"))
    validation_file = forms.ChoiceField(label=_("Validation file (optional)"), required=False)
    model = forms.ChoiceField(label=_("Start from"))
    method = forms.ChoiceField(label=_("Method"), choices=FineTuningJob.Method.choices, initial="lora")
    # Pre-training from scratch only: the new model's size and tokenizer (hyperparameters `preset` and `tokenizer`).
    preset = forms.ChoiceField(
        label=_("Model size (from scratch)"), required=False, initial=DEFAULT_PRESET,
        choices=[(name, _("%(name)s: about %(millions)s M parameters, context %(context)s%(gpu)s") % {
            "name": name, "millions": round(parameter_count(name) / 1e6, 1), "context": p.context,
            "gpu": _(" (GPU worker only)") if p.gpu_only else ""}) for name, p in PRESETS.items()],
    )
    tokenizer = forms.ChoiceField(
        label=_("Tokenizer (from scratch)"), required=False, initial=TOKENIZERS[0],
        choices=[("base", _("the base model's (every engine serves the model)")),
                 ("bpe", _("a new one trained on your text (smaller model; transformers engine only)"))],
    )
    suffix = forms.SlugField(label=_("Suffix (part of the model's name)"), required=False, max_length=40)
    seed = forms.IntegerField(label=_("Seed"), required=False, initial=42)
    register_as = forms.ChoiceField(
        label=_("Register the result as"), required=False,
        help_text=_("The next version of one of your models moves its alias latest to the new version; apps pinned "
                    "to latest follow it, apps pinned to a version stay."),
    )
    field_order = ["training_file", "validation_file", "model", "method", "preset", "tokenizer", *PAGE_NAMES, "suffix",
                   "register_as", "seed"]

    def __init__(self, *args, user, model_choices, register_choices=(("", "-"),), **kwargs):
        super().__init__(*args, **kwargs)
        for h in HYPERPARAMETERS:
            if h.on_page:
                # The spec's label is marked for translation there (gettext_noop); it is translated here.
                self.fields[h.name] = forms.CharField(label=_(h.label), initial="auto", max_length=10)
        self.order_fields(self.field_order)
        # A file still being checked can be chosen too: the job waits for its checks (as OpenAI's).
        checking = _("being checked")
        files = [(f.public_id, f"{f.filename} · {f.get_format_display()} · {f.example_count} examples"
                  if f.status == TrainingFile.Status.PROCESSED else f"{f.filename} · {checking}")
                 for f in training_file_list(user=user).exclude(status=TrainingFile.Status.ERROR)]
        self.fields["training_file"].choices = files
        self.fields["validation_file"].choices = [("", _("none"))] + files
        self.fields["model"].choices = model_choices
        self.fields["register_as"].choices = register_choices

    def hyperparameters(self) -> dict:
        d = self.cleaned_data
        scratch = SCRATCH_OPTIONS if d.get("method") == FineTuningJob.Method.SCRATCH else ()
        return {k: d[k] for k in (*PAGE_NAMES, *scratch) if d.get(k) not in ("", None)}

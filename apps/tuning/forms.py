from django import forms
from django.utils.translation import gettext_lazy as _

from apps.tuning.models import FineTuningJob, TrainingFile

AUTO = [("auto", _("auto"))]


class UploadForm(forms.Form):
    file = forms.FileField(
        label=_("Training data"),
        help_text=_("JSONL with one chat per line ({\"messages\": [...]}), or prompt/completion pairs; "
                    "or a .txt file of plain text for continued pre-training."),
    )


class JobForm(forms.Form):
    training_file = forms.ChoiceField(label=_("Training file"))
    validation_file = forms.ChoiceField(label=_("Validation file (optional)"), required=False)
    model = forms.ChoiceField(label=_("Start from"))
    method = forms.ChoiceField(label=_("Method"), choices=FineTuningJob.Method.choices, initial="lora")
    n_epochs = forms.CharField(label=_("Epochs"), initial="auto", max_length=10)
    batch_size = forms.CharField(label=_("Batch size"), initial="auto", max_length=10)
    learning_rate_multiplier = forms.CharField(label=_("Learning-rate multiplier"), initial="auto", max_length=10)
    lora_rank = forms.CharField(label=_("LoRA rank"), initial="auto", max_length=10)
    suffix = forms.SlugField(label=_("Suffix (part of the model's name)"), required=False, max_length=40)
    seed = forms.IntegerField(label=_("Seed"), required=False, initial=42)

    def __init__(self, *args, user, model_choices, **kwargs):
        super().__init__(*args, **kwargs)
        files = [(f.public_id, f"{f.filename} · {f.get_format_display()} · {f.example_count} examples")
                 for f in TrainingFile.objects.filter(owner=user, status=TrainingFile.Status.PROCESSED)]
        self.fields["training_file"].choices = files
        self.fields["validation_file"].choices = [("", _("none"))] + files
        self.fields["model"].choices = model_choices

    def hyperparameters(self) -> dict:
        d = self.cleaned_data
        return {k: d[k] for k in ("n_epochs", "batch_size", "learning_rate_multiplier", "lora_rank") if d.get(k) not in ("", None)}

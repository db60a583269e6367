"""The evaluation gate on every job (issue 15), Django's side: what the estimate and the events say about the
held-out split, which version the trainer measures beside the new one (the one `latest` names today, when the job
registers the next version of a model), the gate's decision, and the figures the registered version carries.

The measurements themselves are the trainer's (`apps.tuning.trainer.evaluation`, no Django). Imports only the
registry and the tuning models; `versions.result_version_promote` applies the decision.
"""

from __future__ import annotations

from apps.registry.models import ModelAlias, ModelVersion
from apps.registry.references import DEFAULT_ALIAS
from apps.registry.selectors import model_version_weights_chain
from apps.tuning.models import FineTuningJob, TrainingFile
from apps.tuning.trainer.data import holdout_size

# The methods the gate measures (a classifier's accuracy and a model pre-trained from scratch are measured by
# their own trainers).
EVALUATED_METHODS = (FineTuningJob.Method.LORA, FineTuningJob.Method.FULL, FineTuningJob.Method.PRETRAIN)


def evaluation_split(*, training_file: TrainingFile, validation_file: TrainingFile | None, method: str) -> dict:
    """What the job evaluates on, for the estimate and the events: {"source", "examples", "of", "message"}; empty
    for a method the gate does not measure."""
    if method not in EVALUATED_METHODS:
        return {}
    n = training_file.example_count
    if validation_file is not None:
        return {"source": "validation_file", "examples": validation_file.example_count, "of": n,
                "message": f"Evaluated on the validation file ({validation_file.example_count} examples)."}
    held = holdout_size(n)
    if held:
        return {"source": "held_out", "examples": held, "of": n,
                "message": f"No validation file: {held} of the {n} training examples are held out to compare the base "
                           "and the tuned model; the model trains on the others."}
    return {"source": "none", "examples": 0, "of": n,
            "message": f"No validation file, and {n} examples are too few to hold some out: the model trains on all of "
                       "them and no validation figures are measured."}


def _latest(registered_model_id: int) -> ModelAlias | None:
    return (ModelAlias.objects.filter(registered_model_id=registered_model_id, name=DEFAULT_ALIAS)
            .select_related("version__registered_model").first())


def evaluation_compare(*, job: FineTuningJob) -> dict | None:
    """The trainer's `compare`: the version `latest` names today in the model the job registers into, measured on
    the job's own held-out data. None for a job whose result is a model of its own (nothing to replace)."""
    if not job.register_as_id or job.method not in EVALUATED_METHODS:
        return None
    latest = _latest(job.register_as_id)
    if latest is None or latest.version.task == ModelVersion.Task.CLASSIFIER:
        return None
    root, adapters = model_version_weights_chain(version=latest.version)
    return {"reference": latest.version.reference, "model": str(root.path), "adapters": [str(a.path) for a in adapters]}


def _figure(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def evaluation_gate(*, job: FineTuningJob, evaluation: dict) -> dict | None:
    """May the job's new version take `latest`? Only when its validation loss on the held-out data is no higher than
    that of the version `latest` names, measured on the same data. None: no gate (a model of its own, or the model's
    first version). Otherwise {"passed", "reason", "compared_with", "current_loss", "new_loss", "examples"}."""
    if not job.register_as_id:
        return None
    latest = _latest(job.register_as_id)
    if latest is None:
        return None
    current = evaluation.get("current") or {}
    new_loss = (evaluation.get("tuned") or {}).get("loss")
    examples = (evaluation.get("split") or {}).get("examples", 0)
    reference = latest.version.reference
    gate = {"compared_with": reference, "current_loss": current.get("loss"), "new_loss": new_loss, "examples": examples,
            "passed": False}
    if not examples:
        why = "there was no held-out data (no validation file, and too few examples to hold some out)"
    elif current.get("reference") != reference:
        why = f"latest moved to {reference} while the job trained (it was measured against {current.get('reference') or 'nothing'})"
    elif new_loss is None or current.get("loss") is None:
        why = f"{reference} could not be measured on the held-out data"
    elif new_loss <= current["loss"]:
        return {**gate, "passed": True,
                "reason": f"latest moved: validation loss {_figure(new_loss)} on {examples} held-out examples, no higher "
                          f"than {reference}'s {_figure(current['loss'])} on the same examples."}
    else:
        return {**gate, "reason": f"Kept as a candidate: its validation loss {_figure(new_loss)} on {examples} held-out "
                                  f"examples is higher than {reference}'s {_figure(current['loss'])} on the same "
                                  f"examples, so latest stays at {reference}. You can move latest by hand."}
    return {**gate, "reason": f"Kept as a candidate: it could not be compared with {reference} ({why}), so latest "
                              f"stays. You can move latest by hand."}


def evaluation_metrics(*, evaluation: dict, gate: dict | None) -> dict:
    """The registered version's figures: flat numbers for its metrics table, and the whole evaluation (answer pairs,
    the gate's decision) under `evaluation` for its model card and pages."""
    if not evaluation:
        return {}
    base, tuned = evaluation.get("base") or {}, evaluation.get("tuned") or {}
    flat = {
        "evaluated_examples": (evaluation.get("split") or {}).get("examples", 0),
        "exact_match_before": base.get("exact_match"),
        "exact_match_after": tuned.get("exact_match"),
        "latest_val_loss": (evaluation.get("current") or {}).get("loss"),
    }
    return {**{k: v for k, v in flat.items() if v is not None}, "evaluation": {**evaluation, "gate": gate}}

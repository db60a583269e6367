"""The shape of apps/tuning: one source for the hyperparameters, imports that point one way, tasks sent by name."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from apps.tuning import dispatch
from apps.tuning.forms import SCRATCH_OPTIONS, JobForm
from apps.tuning.hyperparameters import (
    BASE_LEARNING_RATE,
    HYPERPARAMETERS,
    NAMES,
    PAGE_NAMES,
    hyperparameters_resolve,
    training_estimate,
)
from apps.tuning.models import FineTuningJob
from apps.tuning.trainer.train import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
TUNING = ROOT / "apps" / "tuning"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_nothing_in_tuning_imports_its_tasks():
    """tasks.py imports the services (an entry point, like a view); the services send tasks by name."""
    for path in TUNING.rglob("*.py"):
        if path.name != "tasks.py":
            assert "apps.tuning.tasks" not in imported_modules(path), path.relative_to(ROOT)


def test_the_trainer_and_the_hyperparameters_import_no_django():
    code = "import sys, apps.tuning.trainer.train, apps.tuning.hyperparameters; print(any(m == 'django' or m.startswith('django.') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_task_names_are_registered_and_routed():
    from store.celery import app

    app.loader.import_default_modules()
    for name in (dispatch.VALIDATE_TRAINING_FILE, dispatch.RUN_FINETUNE_JOB, dispatch.REQUEUE_STALE_JOBS):
        assert name in app.tasks
    route = app.amqp.router.route({}, dispatch.RUN_FINETUNE_JOB)  # what send_task does with the name
    assert route["queue"].name == "gpu"


def test_auto_follows_the_size_of_the_file():
    small = hyperparameters_resolve(method="lora", examples=24, given=None)
    assert small == {"n_epochs": 5, "batch_size": 4, "learning_rate_multiplier": 1.0, "lora_rank": 16, "lora_alpha": 32,
                     "learning_rate": 1e-3}
    big = hyperparameters_resolve(method="full", examples=500, given={"lora_rank": "8", "learning_rate_multiplier": 2})
    assert big["n_epochs"] == 3 and big["batch_size"] == 8 and big["lora_alpha"] == 16 and big["learning_rate"] == pytest.approx(4e-5)
    assert training_estimate(method="lora", hyperparameters=small, examples=24, tokens=600) == {"steps": 30, "tokens": 3000, "seconds_cpu": 15}


@pytest.mark.parametrize("method, examples, epochs, multiplier, rate", [
    # Below 30 examples, every method: repeated until about 100 examples are seen, at the base rate.
    ("lora", 20, 5, 1.0, 1e-3), ("full", 20, 5, 1.0, 2e-5),
    # A LoRA on 30 to 199 examples counts steps: about 64 examples seen (at least one epoch) at twice the base rate.
    ("lora", 30, 2, 2.0, 2e-3), ("lora", 40, 2, 2.0, 2e-3), ("lora", 64, 1, 2.0, 2e-3), ("lora", 150, 1, 2.0, 2e-3),
    ("lora", 199, 1, 2.0, 2e-3),
    # Other methods keep 3 epochs at their own base rate; so does a LoRA on 200 examples or more (batch 8 there).
    ("full", 40, 3, 1.0, 2e-5), ("full", 150, 3, 1.0, 2e-5), ("pretrain", 40, 3, 1.0, 1e-3),
    ("classification", 40, 3, 1.0, 5e-4), ("lora", 200, 3, 1.0, 1e-3), ("lora", 250, 3, 1.0, 1e-3),
])
def test_auto_epochs_and_rate_follow_the_method_and_the_file(method, examples, epochs, multiplier, rate):
    chosen = hyperparameters_resolve(method=method, examples=examples, given=None)
    assert (chosen["n_epochs"], chosen["learning_rate_multiplier"]) == (epochs, multiplier)
    assert chosen["learning_rate"] == pytest.approx(rate)


def test_a_given_value_replaces_only_its_own_auto():
    # A LoRA on 60 examples: the multiplier given, the epochs still `auto` (and the other way round).
    assert hyperparameters_resolve(method="lora", examples=60, given={"learning_rate_multiplier": 1})["n_epochs"] == 1
    chosen = hyperparameters_resolve(method="lora", examples=60, given={"n_epochs": 3, "learning_rate_multiplier": "auto"})
    assert chosen["n_epochs"] == 3 and chosen["learning_rate"] == pytest.approx(2e-3)


@pytest.mark.parametrize("given, param", [
    ({"n_epochs": 0}, "hyperparameters.n_epochs"), ({"learning_rate_multiplier": 0}, "hyperparameters.learning_rate_multiplier"),
    ({"lora_alpha": 2000}, "hyperparameters.lora_alpha"), ({"n_epochs": "many"}, "hyperparameters"), ({"warp": 9}, "hyperparameters"),
])
def test_each_hyperparameter_is_checked(given, param):
    from apps.core.errors import InvalidRequest

    with pytest.raises(InvalidRequest) as err:
        hyperparameters_resolve(method="lora", examples=24, given=given)
    assert err.value.param == param


def test_every_reader_takes_the_same_names_and_defaults(db, user):
    assert set(BASE_LEARNING_RATE) == set(FineTuningJob.Method.values)
    form = JobForm(user=user, model_choices=[])
    assert list(PAGE_NAMES) == ["n_epochs", "batch_size", "learning_rate_multiplier", "lora_rank"]
    # The page's hyperparameter fields: pre-training from scratch's two choices (menus of their own), then the numbers.
    assert [name for name in form.fields if name in NAMES] == [*SCRATCH_OPTIONS, *PAGE_NAMES]
    specs = {h.name: h for h in HYPERPARAMETERS}
    for name in SCRATCH_OPTIONS:  # each menu offers exactly what the hyperparameter allows
        assert [value for value, _label in form.fields[name].choices] == list(specs[name].choices), name
    assert str(form.fields["n_epochs"].label) == "Epochs"
    # The trainer's defaults are `auto` for a mid-sized file where it counts epochs (a full fine-tune's), at its method's
    # base rate: a LoRA's `auto` there counts steps from the file's size, which a standalone trainer run does not know.
    defaults = hyperparameters_resolve(method="full", examples=100, given=None)
    config = TrainConfig(base_model="m", train_file="t", output_dir="o", work_dir="w")
    assert {h.name: getattr(config, h.name) for h in HYPERPARAMETERS if hasattr(config, h.name)} == {
        **{k: defaults[k] for k in ("n_epochs", "batch_size", "lora_rank", "lora_alpha")},
        # the method-specific ones: as `auto` resolves them for their own method
        "classifier_body": hyperparameters_resolve(method="classification", examples=100, given=None)["classifier_body"],
        **{k: hyperparameters_resolve(method="scratch", examples=100, given=None)[k] for k in ("preset", "tokenizer")},
    }
    assert config.effective_learning_rate == BASE_LEARNING_RATE[config.method] and defaults["learning_rate_multiplier"] == 1

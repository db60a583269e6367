"""Issue 15's evaluation gate, end to end with the runner in this process (two real jobs on the tiny model): a job
without a validation file still reports base against tuned (both losses, exact match, answer pairs) on every face;
a worse retrain (learning rate about 0, against a version trained well on the task) is kept as a candidate while
`latest` stays; the owner moves `latest` by hand, another user cannot."""

import pytest

from apps.registry.models import ModelAlias, ModelAliasMove
from apps.tuning import services
from tests.factories import UserFactory
from tests.tuning.test_runner import child_env  # noqa: F401 - the fixture: the trainer child's environment
from tests.tuning.test_versions import BASE, bearer, processed, run


def latest(name: str) -> int:
    return ModelAlias.objects.get(registered_model__name=name, name="latest").version.number


def test_base_against_tuned_without_a_validation_file_and_a_worse_retrain_kept_as_a_candidate(setup, child_env, client):  # noqa: F811
    user, other = setup, UserFactory()
    key = bearer(user)
    data = processed(user, n=24)  # no validation file: 3 examples held out, 21 trained on
    client.force_login(user)
    estimate = client.get("/customize/estimate", {"training_file": data.public_id}).json()
    assert estimate["evaluation"]["source"] == "held_out" and estimate["evaluation"]["examples"] == 3

    first = run(services.finetune_job_create(owner=user, training_file=data, model=BASE, suffix="pirate",
                                             hyperparameters={"n_epochs": 3, "batch_size": 4}))
    ev = first.evaluation
    assert ev["split"] == {"source": "held_out", "examples": 3, "seed": 42}
    assert ev["tuned"]["loss"] < ev["base"]["loss"]
    assert (first.val_loss_before, first.val_loss_after) == (ev["base"]["loss"], ev["tuned"]["loss"])
    assert ev["exact_match_items"] == 3 and 0 <= ev["base"]["exact_match"] <= 1 and 0 <= ev["tuned"]["exact_match"] <= 1
    assert len(ev["pairs"]) == 3 and all(p["expected"].startswith("Arr, matey!") for p in ev["pairs"])
    assert "gate" not in ev  # a model of its own: its first version is latest
    assert any("3 of the 24 training examples are held out" in m for m in first.events.values_list("message", flat=True))
    # The registered version carries the figures, in its metrics and its model card.
    version = first.result_version
    assert version.metrics["evaluated_examples"] == 3 and version.metrics["exact_match_after"] == ev["tuned"]["exact_match"]
    assert version.metrics["evaluation"]["pairs"] == ev["pairs"]
    card = (version.path / "README.md").read_text()
    assert "## Evaluation" in card and "| this version |" in card and f"expected: {ev['pairs'][0]['expected']}" in card
    # The job page (answers escaped, side by side) and /api/v1.
    page = client.get(f"/customize/jobs/{first.public_id}/").content.decode()
    assert 'id="evaluation"' in page and 'data-role="loss-delta"' in page and 'data-role="pairs"' in page
    assert f"{ev['tuned']['loss'] - ev['base']['loss']:.4f}" in page
    assert client.get(f"/api/v1/jobs/{first.public_id}/", **key).json()["evaluation"]["tuned"] == ev["tuned"]
    name = first.fine_tuned_model
    assert latest(name) == 1

    # A retrain that learns nothing (learning rate about 0) registered as v2: measured against v1 on its own split.
    second = run(services.finetune_job_create(owner=user, training_file=data, model=BASE, register_as=name,
                                              hyperparameters={"n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 1e-6}))
    assert second.result_version.number == 2
    gate = second.evaluation["gate"]
    assert gate["passed"] is False and gate["compared_with"] == f"{name}@v1" and gate["current_loss"] < gate["new_loss"]
    # v1 measured on the same held-out examples as its own job measured it (same seed, same file: the same split).
    assert second.evaluation["current"]["loss"] == pytest.approx(ev["tuned"]["loss"], rel=1e-3)
    assert latest(name) == 1  # latest stays; v2 is a candidate, with the reason stored and shown
    assert second.result_version.metrics["evaluation"]["gate"] == gate
    assert second.events.filter(level="warn", message__startswith="Kept as a candidate").exists()
    assert "latest stays where it was" in second.events.last().message
    model_page = client.get(f"/models/{name}/").content.decode()
    assert 'data-role="candidate-reason"' in model_page and "Kept as a candidate" in model_page
    job_page = client.get(f"/customize/jobs/{second.public_id}/").content.decode()
    assert 'data-role="gate"' in job_page and "Kept as a candidate" in job_page

    # Another user can move none of it: not with the page's button, not with the API.
    client.force_login(other)
    assert client.post(f"/models/{name}/v2/make-latest").status_code == 404
    assert client.put(f"/api/v1/models/{name}/aliases/latest/", {"version": 2}, content_type="application/json",
                      **bearer(other)).status_code == 404
    assert latest(name) == 1
    # The owner moves latest by hand, from the model page.
    client.force_login(user)
    assert client.post(f"/models/{name}/v2/make-latest").status_code == 302
    assert latest(name) == 2
    move = ModelAliasMove.objects.filter(registered_model__name=name, alias="latest").first()
    assert (move.from_version.number, move.to_version.number, move.moved_by) == (1, 2, user)
    assert 'data-role="candidate-reason"' not in client.get(f"/models/{name}/").content.decode()

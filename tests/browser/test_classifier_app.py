"""Issue 16 in a real browser: a classifier trained by the store's trainer (method classification, on the tiny
model), a Classifier app built on it in the builder, and the app labelling text on its page (the label and a bar
per label), through the web process and the model server's /v1/classify."""

import json
import random
import re

from playwright.sync_api import expect

from apps.registry.models import ModelVersion
from tests.browser.test_store_flow import sign_up

LABELS = {"billing": ["invoice", "refund", "charged"], "bug": ["crash", "error", "broken"], "praise": ["love", "great", "thanks"]}


def test_a_classifier_app_labels_text_on_its_page(page, tmp_path):
    from apps.accounts.models import User
    from apps.registry.services import model_version_register
    from apps.tuning.trainer.train import TrainConfig, run_training
    from tests.conftest import require

    sign_up(page, "sorter")
    owner = User.objects.get(username="sorter")
    rng = random.Random(1)
    rows = [{"text": f"The {rng.choice(w)} again, {rng.choice(w)}", "label": label} for label, w in LABELS.items() for _ in range(8)]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    from django.conf import settings

    base = ModelVersion.objects.get(registered_model__name=settings.BASE_MODEL_ID)
    result = run_training(TrainConfig(base_model=str(base.path), train_file=str(tmp_path / "train.jsonl"),
                                      output_dir=str(tmp_path / "out"), work_dir=str(tmp_path / "work"),
                                      method="classification", n_epochs=2, batch_size=8, max_length=64, learning_rate=5e-3))
    require(result.status == "completed", "training did not complete")
    name = f"ft:{settings.BASE_MODEL_ID}:sorter:tickets:ftjob-browser"
    model_version_register(name=name, source_dir=tmp_path / "out", owner=owner, base_version=base,
                           task=ModelVersion.Task.CLASSIFIER)

    page.goto("/build/new/")
    page.get_by_label("Name").fill("Ticket Sorter")
    page.get_by_label("Short description").fill("Sorts support tickets")
    page.get_by_label("Kind").select_option("classifier")
    page.get_by_label("Model").select_option(f"{name}@latest")
    page.get_by_role("button", name="Create draft").click()
    expect(page.get_by_text("Draft saved")).to_be_visible()
    page.get_by_label("Who can use it").select_option("private")
    page.get_by_role("button", name="Publish", exact=True).click()
    expect(page.get_by_role("heading", name="Ticket Sorter")).to_be_visible()

    page.get_by_role("button", name="Classify").click()  # empty: a readable error, no request
    expect(page.locator("#use [data-role=\"error\"]")).to_have_text("Type a text to classify.")
    page.get_by_label("Text to classify").fill("I was charged twice for the invoice")
    page.get_by_role("button", name="Classify").click()
    expect(page.locator('[data-role="label"]')).to_have_text(re.compile("^(billing|bug|praise)$"), timeout=60_000)
    bars = page.locator('[data-role="scores"] li')
    expect(bars).to_have_count(3)
    expect(bars.first.locator(".label-value")).to_have_text(re.compile(r"^\d+\.\d%$"))
    assert not page.console_errors, page.console_errors

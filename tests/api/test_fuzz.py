"""Fuzzing the API from its own schema: schemathesis against a live store, both faces (/api/v1 and /v1), with a key.

Every response check schemathesis has is on: no 5xx; each status, content type, header and body as /api/schema/
describes it (errors included: apps/api/schema.py lists the ones each operation can give); 405 with `Allow` for a
method an operation lacks; 401 without the key; a deleted object gone, a created one found; an answer within 30 s.
Two checks judge the inputs instead, and stay off: `positive_data_acceptance` wants every request the schema allows
accepted, but the store's rules go beyond a schema (a generator needs a template with a {field}, a category or file
must exist, continued pre-training takes a text file) and answer 400, as OpenAI does; `negative_data_rejection`
wants every request the schema forbids refused, where DRF reads leniently (`0` for a string field is "0", a `limit`
that is not a number gives the default page). Invalid requests are still sent (about half the cases): they must
get an error the schema lists, never a 5xx.

All 57 operations are fuzzed, the three that generate text too (/v1/chat/completions, /v1/completions,
POST /api/v1/apps/{slug}/runs/) with their work bounded by tests/api/fuzz_hooks.py (at most 16 tokens, n and
num_beams at most 2), as a generation takes seconds on a CPU where the rest answer in milliseconds.

The run is bounded (MAX_EXAMPLES cases per operation and phase) and deterministic, so CI sends the same 3,300 or so
requests each time, in three to four minutes on two busy cores. It prints its figure for the README's security
section.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.accounts.services import api_key_create
from apps.catalog import services as catalog_services
from apps.catalog.models import StoreApp
from apps.chat.models import Conversation, Message
from apps.registry.services import model_version_register
from apps.tuning import services as tuning_services
from tests.conftest import require
from tests.factories import UserFactory
from tests.live import ROOT, store_server

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 20
CHECKS_OFF = ["positive_data_acceptance", "negative_data_rejection"]  # why: the docstring
CLI = Path(sys.executable).with_name("schemathesis")
TRAINING_LINES = "".join(
    json.dumps({"messages": [{"role": "user", "content": f"Say {i}."}, {"role": "assistant", "content": f"{i}."}]}) + "\n"
    for i in range(12)
)


def seed_objects(tiny_hf_dir) -> str:
    """What the fuzzer finds in the lists and reaches by their ids: the base model and a model of the caller's,
    built-in apps (no creator, no category for some), the caller's draft and another user's public app, a processed
    training file, a queued job with no validation file, a conversation. Returns the caller's API key."""
    caller, other = UserFactory(username="fuzzer"), UserFactory(username="other")
    model_version_register(name=settings.BASE_MODEL_ID, source_dir=tiny_hf_dir)
    model_version_register(name="fuzzer-model", source_dir=tiny_hf_dir, owner=caller)
    catalog_services.store_seed()
    StoreApp.objects.update(max_tokens=16)  # runs bounded as in fuzz_hooks.py
    app_fields = {"description": "", "instructions": "Be brief.", "conversation_starters": ["Hi"], "max_tokens": 16}
    catalog_services.app_create(user=caller, data={"name": "Fuzz draft", "short_description": "A draft", **app_fields})
    public = catalog_services.app_create(user=other, data={"name": "Public helper", "short_description": "Helps", **app_fields})
    catalog_services.app_publish(app=public, user=other, visibility="public")
    training = tuning_services.training_file_create(owner=caller, upload=SimpleUploadedFile("train.jsonl", TRAINING_LINES.encode()))
    training = tuning_services.training_file_validate(file_id=training.pk)  # no worker runs here
    assert training.status == "processed", training.problems
    tuning_services.finetune_job_create(owner=caller, training_file=training, model=settings.BASE_MODEL_ID)
    conversation = Conversation.objects.create(app=public, user=caller, title="A chat")
    Message.objects.create(conversation=conversation, role="user", content="Hello")
    return api_key_create(user=caller, name="fuzz")[1]


def run_figure(ndjson: Path) -> dict:
    """Operations, cases, responses by status and failures by check, from schemathesis's event log."""
    operations, cases, statuses, failures, selected = set(), 0, Counter(), Counter(), None
    for line in ndjson.read_text().splitlines():
        event = json.loads(line)
        if "LoadingFinished" in event:
            selected = event["LoadingFinished"]["statistic"]["operations"]
        if "ScenarioFinished" not in event:
            continue
        recorder = event["ScenarioFinished"]["recorder"]
        cases += len(recorder.get("cases", {}))
        if event["ScenarioFinished"]["phase"] != "stateful":
            operations.add(recorder["label"])  # "GET /api/v1/apps/{slug}/"
        for interaction in recorder.get("interactions", {}).values():
            if interaction.get("response"):
                statuses[interaction["response"]["status_code"]] += 1
        for checks in recorder.get("checks", {}).values():
            failures.update(c["name"] for c in checks if c["status"] != "success")
    return {"operations": len(operations), "selected": selected, "cases": cases, "responses": sum(statuses.values()),
            "server_errors": sum(n for status, n in statuses.items() if status >= 500),
            "statuses": dict(sorted(statuses.items())), "failures": dict(failures)}


@pytest.mark.django_db(transaction=True)
def test_the_api_keeps_to_its_schema_under_fuzzing(tiny_hf_dir, tmp_path):
    require(CLI.exists(), "schemathesis is not installed (pip install -e '.[test]')")
    key = seed_objects(tiny_hf_dir)
    report = tmp_path / "report"
    with store_server(log_path=tmp_path / "store.log", INFERENCE_DTYPE="float32") as url:
        command = [
            str(CLI), "run", f"{url}/api/schema/", "--url", url, "--header", f"Authorization: Bearer {key}",
            "--checks", "all", "--exclude-checks", ",".join(CHECKS_OFF),
            "--max-examples", str(MAX_EXAMPLES), "--generation-deterministic",
            # One worker: CPython 3.11.7's ast.parse is not thread-safe, and hypothesis parses in the workers.
            # A generation may take seconds on a CPU that other jobs share: answers within 30 s, none lost at 60.
            "--workers", "1", "--max-response-time", "30", "--request-timeout", "60", "--no-color",
            "--report", "junit,ndjson", "--report-ndjson-path", str(report / "events.ndjson"),
            "--report-junit-path", str(report / "junit.xml"),
        ]
        hooks = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.api.fuzz_hooks", "PYTHONPATH": str(ROOT)}
        started = time.monotonic()
        run = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=tmp_path, env=hooks)
        seconds = time.monotonic() - started
    output = run.stdout + run.stderr
    (report / "schemathesis.txt").write_text(output)
    figure = run_figure(report / "events.ndjson")
    print(f"\nfuzzing: {figure['operations']} operations (of {figure['selected']['total']}) x {figure['cases']} cases ({figure['responses']} responses) in "
          f"{seconds:.0f} s; 5xx: {figure['server_errors']}; failures: {figure['failures'] or 0}; "
          f"statuses: {figure['statuses']}; report: {report}")
    assert run.returncode == 0, output[-30000:]
    assert figure["server_errors"] == 0 and not figure["failures"], figure
    assert figure["operations"] == figure["selected"]["selected"] == figure["selected"]["total"], figure

"""The web tier imports no torch: a web process on the remote engine (the default) loads its URL map, every module
it can reach, the Celery app as web finalizes it, and answers real requests, with torch and transformers never
imported. The process's RSS is printed (the README's "web RSS without torch" figure; target under 200 MB)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.live import ROOT, live_env

# Modules that only the model server, the workers' training/merge children and the one-off import run: they load
# models and may import torch. Everything else under apps/ is imported by the child below and must stay light.
MODEL_PROCESS_ONLY = {
    "apps.inference.server": "the model server (python -m apps.inference.server) owns the loaded models",
    "apps.inference.local": "the local engine, run by the model server (and by tests/benchmarks on `local`)",
    "apps.inference.cache": "the loaded models' LRU, under the local engine",
    "apps.inference.loading": "safetensors/PEFT loading, under the local engine",
    "apps.inference.scheduler": "continuous batching, under the local engine",
    "apps.inference.sampling": "logits processors, under the local engine",
    "apps.inference.quantize": "int8 weights, under the local engine",
    "apps.registry.gguf_convert": "GGUF -> safetensors, run by import_base_model",
    "apps.registry.base_model": "the base-model import (manage.py import_base_model, compose's `init`)",
    "apps.registry.management.commands.import_base_model": "the one-off import",
    "apps.registry.merge_child": "the merge, a child process of the worker's build task",
    "apps.inference.gguf_export": "GGUF exports: the model server's llama.cpp engine and the export task's child",
    "apps.inference.llamacpp": "the llama.cpp engine, run by the model server (INFERENCE_ENGINE=llamacpp)",
    "apps.registry.model_import": "the staff's model import (manage.py import_model)",
    "apps.registry.management.commands.import_model": "the one-off staff import",
    "apps.tuning.child": "the training process, a child of worker-gpu's runner",
    "apps.tuning.trainer.train": "TRL/PEFT training, in that child",
    "apps.tuning.trainer.__main__": "the trainer run from a shell",
    "apps.tuning.trainer.classify": "classification training, in the training child",
    "apps.tuning.trainer.scratch": "pre-training from scratch, in the training child",
    "apps.tuning.trainer.evaluation": "the evaluation gate's measurements, in the training child (its split is in data.py)",
    "apps.inference.classifier": "classifiers served on transformers, under the local engine",
}

CHILD = r"""
import importlib, json, os, pkgutil, sys, traceback

import psutil

# On failure, say who imported torch first: the stack of the first attempt to find it.
first_import = []
class Watch:
    def find_spec(self, name, path=None, target=None):
        if name in ("torch", "transformers") and not first_import:
            stack = [f for f in traceback.format_stack(limit=40)[:-1] if "<frozen" not in f]
            first_import.append("".join(stack))
        return None
sys.meta_path.insert(0, Watch())

import store.asgi  # noqa: F401  (Django set up the way uvicorn's `store.asgi:application` does it)
from django.conf import settings
from django.test import Client
from django.urls import get_resolver

assert settings.INFERENCE_BACKEND == "remote", settings.INFERENCE_BACKEND
skip = set(json.loads(os.environ["NO_TORCH_SKIP"]))

# The Celery app as a web process has it when it sends a task: finalized, tasks modules autodiscovered.
from store.celery import app as celery_app
celery_app.loader.import_default_modules()
celery_app.finalize(auto=True)

# Every view that the URL map names.
views = set()
def walk(resolver):
    for pattern in resolver.url_patterns:
        if hasattr(pattern, "url_patterns"):
            walk(pattern)
        else:
            callback = pattern.callback
            view = getattr(callback, "view_class", None) or getattr(callback, "cls", None) or callback
            views.add(view.__module__)
walk(get_resolver())
for name in sorted(views):
    importlib.import_module(name)

# Every module of the store's apps but the model processes' own.
import apps
imported = []
for info in pkgutil.walk_packages(apps.__path__, "apps."):
    if info.name in skip or ".migrations" in info.name:
        continue
    importlib.import_module(info.name)
    imported.append(info.name)

# Real requests: pages, the native API, /v1, /healthz, the admin, a training file upload.
key = os.environ["NO_TORCH_KEY"]
statuses = {}
browser = Client()
browser.login(username="ops", password="correct horse battery")
bearer = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
for path in ["/", "/apps/chatbot/", "/models/", f"/models/{settings.BASE_MODEL_ID}/",
             f"/models/{settings.BASE_MODEL_ID}/v1/", "/customize/", "/build/", "/accounts/", "/admin/",
             "/admin/registry/modelversion/", "/admin/tuning/finetuningjob/", "/api/docs/"]:
    statuses[path] = browser.get(path).status_code
statuses["/healthz"] = Client().get("/healthz").status_code
for path in ["/api/v1/apps/?limit=10", "/api/v1/models/", "/api/v1/files/", "/api/v1/jobs/", "/api/v1/runs/",
             "/api/v1/me/", "/v1/models", "/v1/files", "/v1/fine_tuning/jobs", "/api/schema/"]:
    statuses[path] = Client().get(path, **bearer).status_code
from django.core.files.uploadedfile import SimpleUploadedFile
line = json.dumps({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]})
upload = SimpleUploadedFile("data.jsonl", (line + "\n").encode())
statuses["POST /v1/files"] = Client().post("/v1/files", {"file": upload, "purpose": "fine-tune"}, **bearer).status_code

# The `tokenizers` library (Rust, no torch) is allowed: exact token counts in web may use it.
heavy = sorted(m for m in ("torch", "transformers", "peft", "trl", "accelerate", "safetensors.torch") if m in sys.modules)
print(json.dumps({"heavy": heavy, "first_import": first_import, "statuses": statuses, "views": len(views), "modules": len(imported),
                  "rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1)}))
"""


@pytest.mark.django_db(transaction=True)
def test_web_process_on_the_remote_engine_never_imports_torch(tiny_version, tmp_path, django_user_model):
    from apps.accounts.services import api_key_create
    from apps.catalog.services import store_seed

    store_seed()
    ops = django_user_model.objects.create_superuser("ops", "ops@example.com", "correct horse battery")
    _, key = api_key_create(user=ops, name="no-torch")
    env = live_env(
        INFERENCE_BACKEND="remote",
        # Nothing listens there: no request here generates, and /healthz's inference check just reports it down.
        INFERENCE_REMOTE_BASE_URL="http://127.0.0.1:9/v1",
        # A broker and data folder of its own: the upload's validation message goes nowhere another test reads.
        STORE_DATA_DIR=str(tmp_path / "data"),
        CELERY_BROKER_URL="filesystem://",
        NO_TORCH_SKIP=json.dumps(sorted(MODEL_PROCESS_ONLY)),
        NO_TORCH_KEY=key,
    )
    proc = subprocess.run(
        [sys.executable, "-c", CHILD], check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"web process RSS without torch: {report['rss_mb']} MB ({report['views']} view modules, "
          f"{report['modules']} app modules imported); answers: {report['statuses']}")
    if report["heavy"]:
        pytest.fail(f"the web process imported {report['heavy']}; first from:\n{report['first_import'][0]}")
    # The requests were answered (no 500: a page that failed to render would prove nothing about its imports).
    bad = {path: status for path, status in report["statuses"].items() if status >= 500 and path != "/healthz"}
    assert not bad, report["statuses"]
    assert report["statuses"]["/api/v1/apps/?limit=10"] == 200 and report["statuses"]["/v1/models"] == 200
    assert report["statuses"]["POST /v1/files"] == 200 and report["statuses"]["/"] == 200
    assert report["statuses"][f"/models/{tiny_version.registered_model.name}/v1/"] == 200
    assert report["rss_mb"] < 200, report["rss_mb"]  # the target for a web process without torch

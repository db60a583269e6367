"""GGUF exports of registry versions, for the llama.cpp engine (apps/inference/gguf_export.py makes them).

With `INFERENCE_ENGINE=llamacpp`, each version is exported by a task right after its registration (task
`GGUF_EXPORT` on the default queue), so the model server finds it ready; on any other engine nothing is exported
ahead, and the model server exports on first use. The export runs in a child process (`python -m
apps.inference.gguf_export`): torch and the model leave with it, as with the merged-weights build.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from celery import current_app
from django.conf import settings
from django.db import transaction

from apps.registry.models import ModelVersion

logger = logging.getLogger(__name__)

# The task's name: sent by name, so that the services never import tasks.py.
GGUF_EXPORT = "apps.registry.tasks.gguf_export"
EXPORT_TIMEOUT_S = 30 * 60  # a 135M model exports in well under a minute on a CPU
# The child's exit status for a model it cannot export (apps.inference.gguf_export.EXIT_UNSUPPORTED: that module
# brings torch, which the web tier, importing this one through the services, must not load).
EXIT_UNSUPPORTED = 3


class ExportFailed(Exception):
    pass


def gguf_export_wanted() -> bool:
    """Exports are made ahead only for the llama.cpp engine (the setting is read where it exists)."""
    return getattr(settings, "INFERENCE_ENGINE", "transformers") == "llamacpp"


def gguf_export_enqueue(*, version: ModelVersion) -> bool:
    """Ask for the version's export once the registration commits, if the llama.cpp engine is configured."""
    if not gguf_export_wanted():
        return False
    transaction.on_commit(lambda: current_app.send_task(GGUF_EXPORT, args=[version.pk]))
    return True


def version_gguf_export(*, version_id: int, quant: str | None = None) -> Path | None:
    """Export a ready version in settings.INFERENCE_GGUF_QUANT (cached: a second call finds the file). None when
    the version is gone or llama.cpp cannot serve it (it stays on the transformers engine); ExportFailed else."""
    version = ModelVersion.objects.filter(pk=version_id, status=ModelVersion.Status.READY).select_related(
        "registered_model"
    ).first()
    if version is None:
        return None
    quant = quant or settings.INFERENCE_GGUF_QUANT
    command = [sys.executable, "-m", "apps.inference.gguf_export", str(version.path), quant]
    try:
        done = subprocess.run(command, check=False, cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=EXPORT_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise ExportFailed(f"the GGUF export of {version} took longer than {EXPORT_TIMEOUT_S} s") from exc
    if done.returncode == EXIT_UNSUPPORTED:
        logger.info("%s is not exported to GGUF: %s", version, done.stderr.strip()[-500:])
        return None
    if done.returncode != 0:
        raise ExportFailed(f"the GGUF export of {version} exited with status {done.returncode}: {done.stderr[-2000:]}")
    path = Path(done.stdout.strip().splitlines()[-1])
    logger.info("%s exported to %s", version, path)
    return path

"""Inference's check for /healthz, registered with core in InferenceConfig.ready(): the engine answers and the
base model is loadable.

On the remote engine (web's default) it asks the model server `GET /health?model=<the base model's reference>`
(a short timeout: a probe that hangs is a failure); on the local engine it loads the base model in this process.
The detail names the server's address: /healthz shows it to staff only.
"""

from __future__ import annotations

from django.conf import settings

from apps.core.health import CheckResult
from apps.inference.remote import RemoteEngine
from apps.inference.services import engine_get, model_spec_for
from apps.inference.types import GenerationRequest, InferenceError
from apps.registry.selectors import model_version_resolve


def check_inference() -> CheckResult:
    engine = engine_get()
    # The base model by its exact version (what the model server loads), whoever may see it.
    version = model_version_resolve(reference=settings.BASE_MODEL_ID, user=None, check_access=False)
    if isinstance(engine, RemoteEngine):
        try:
            return CheckResult(True, engine.check(version.reference))
        except InferenceError as exc:
            return CheckResult(False, f"{engine.root}: {exc}")  # where it looked, for staff
    counted = engine.tokenize(GenerationRequest(model=model_spec_for(version), prompt=""))
    return CheckResult(True, f"in process: {version.reference} loaded (context {counted.context} tokens)")

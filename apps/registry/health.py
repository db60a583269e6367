"""The registry's check for /healthz, registered with core in RegistryConfig.ready()."""

from __future__ import annotations

from django.conf import settings

from apps.core.health import CheckResult
from apps.registry.selectors import registry_problems


def check_registry() -> CheckResult:
    problems = registry_problems()
    if problems:
        return CheckResult(False, "; ".join(problems))
    return CheckResult(True, str(settings.MODELS_REGISTRY_ROOT))

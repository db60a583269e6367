"""The engine is pure Python: everything in apps/inference but its Django side (services.py, with the /healthz
check, and apps.py, the app's wiring) imports without Django."""

import os
import subprocess
import sys
from pathlib import Path

import apps.inference

ROOT = Path(apps.inference.__file__).parent


def test_the_engine_modules_import_without_django():
    modules = sorted(f"apps.inference.{p.stem}" for p in ROOT.glob("*.py") if p.stem not in ("__init__", "services", "apps"))
    assert "apps.inference.local" in modules and "apps.inference.scheduler" in modules
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'django' or m.startswith('store'))\n"
        + "assert not bad, bad\n"
        + "others = sorted(m for m in sys.modules if m.startswith('apps.') and not m.startswith(('apps.inference', 'apps.core.errors')) and m != 'apps.core')\n"
        + "assert not others, others\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(ROOT.parent.parent)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]

"""Settings parsing: each case runs in a fresh interpreter with exactly the environment it describes."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import json, django
from django.conf import settings
django.setup()
db = settings.DATABASES["default"]
print(json.dumps({
    "engine": db["ENGINE"], "name": str(db["NAME"]), "host": db.get("HOST"), "port": db.get("PORT"),
    "user": db.get("USER"), "options": db.get("OPTIONS", {}), "broker": settings.CELERY_BROKER_URL,
    "transport": settings.CELERY_BROKER_TRANSPORT_OPTIONS, "secret": settings.SECRET_KEY, "debug": settings.DEBUG,
    "hosts": settings.ALLOWED_HOSTS, "registry": str(settings.MODELS_REGISTRY_ROOT),
    "routes": settings.CELERY_TASK_ROUTES, "prefetch": settings.CELERY_WORKER_PREFETCH_MULTIPLIER,
}))
"""
CONFIG_VARS = ["DATABASE_URL", "CELERY_BROKER_URL", "SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "MODELS_REGISTRY_ROOT"]


def probe(tmp_path, **env) -> dict:
    base = {k: v for k, v in os.environ.items() if k not in CONFIG_VARS}
    base.update(DJANGO_SETTINGS_MODULE="store.settings", STORE_DATA_DIR=str(tmp_path / "data"), **env)
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=base, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_embedded_default_needs_no_server(tmp_path):
    s = probe(tmp_path)
    assert s["engine"] == "django.db.backends.sqlite3"
    assert s["name"] == str(tmp_path / "data" / "db.sqlite3")
    assert "journal_mode=WAL" in s["options"]["init_command"]
    assert s["options"]["transaction_mode"] == "IMMEDIATE" and s["options"]["timeout"] >= 5
    assert s["broker"] == "filesystem://"
    assert s["transport"]["data_folder_in"] == s["transport"]["data_folder_out"]
    assert (tmp_path / "data" / "broker" / "queue").is_dir()
    assert s["debug"] is False
    assert s["registry"] == str(ROOT / "models_registry")
    assert s["routes"]["apps.tuning.tasks.run_finetune_job"] == {"queue": "gpu"} and s["prefetch"] == 1


def test_generated_secret_is_kept_and_shared(tmp_path):
    first, second = probe(tmp_path), probe(tmp_path)
    assert len(first["secret"]) >= 50 and first["secret"] == second["secret"]
    key_file = tmp_path / "data" / "secret_key"
    assert key_file.read_text().strip() == first["secret"]
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"


def test_production_variables(tmp_path):
    s = probe(
        tmp_path,
        DATABASE_URL="postgres://store:s3cret@db.internal:6543/gptstore",
        CELERY_BROKER_URL="redis://redis:6379/2",
        SECRET_KEY="x" * 60,
        DEBUG="true",
        ALLOWED_HOSTS="store.example.com,api.example.com",
        MODELS_REGISTRY_ROOT=str(tmp_path / "artifacts"),
    )
    assert s["engine"] == "django.db.backends.postgresql"
    assert (s["name"], s["host"], s["port"], s["user"]) == ("gptstore", "db.internal", 6543, "store")
    assert s["broker"] == "redis://redis:6379/2" and "data_folder_in" not in s["transport"]
    assert s["secret"] == "x" * 60 and not (tmp_path / "data" / "secret_key").exists()
    assert s["debug"] is True
    assert s["hosts"] == ["store.example.com", "api.example.com"]
    assert s["registry"] == str(tmp_path / "artifacts")


def test_env_example_lists_every_variable_the_settings_read():
    import re

    names = set(re.findall(r'env\.\w+\(\s*"([A-Z_]+)"', (ROOT / "store" / "settings.py").read_text()))
    names |= set(re.findall(r'env\.db\(\s*"([A-Z_]+)"', (ROOT / "store" / "settings.py").read_text()))
    listed = set(re.findall(r"^#?\s*([A-Z_]+)=", (ROOT / ".env.example").read_text(), flags=re.M))
    assert names and names <= listed, f"missing from .env.example: {sorted(names - listed)}"


PRODUCTION = {"SECRET_KEY": "k" * 20 + "-production-secret-of-sixty-characters-or-so-1234", "DEBUG": "false",
              "ALLOWED_HOSTS": "store.example.com", "SECURE_COOKIES": "true", "BEHIND_TLS_PROXY": "true"}
HTTPS_PROBE = """
import json, django
django.setup()
from django.test import Client
from django.test.utils import setup_test_environment
setup_test_environment()
client = Client(SERVER_NAME="store.example.com")
plain = client.get("/terms/", HTTP_X_FORWARDED_PROTO="http")
secure = client.get("/terms/", HTTP_X_FORWARDED_PROTO="https")
probe = client.get("/healthz")
print(json.dumps({"plain": [plain.status_code, plain.get("Location")], "hsts": secure.get("Strict-Transport-Security"),
                  "secure": secure.status_code, "csp": secure.get("Content-Security-Policy"),
                  "healthz": probe.status_code}))
"""


def run_with(tmp_path, args, **env):
    base = {k: v for k, v in os.environ.items() if k not in CONFIG_VARS + ["SECURE_COOKIES", "BEHIND_TLS_PROXY"]}
    base.update(DJANGO_SETTINGS_MODULE="store.settings", STORE_DATA_DIR=str(tmp_path / "data"), **env)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=base, capture_output=True, text=True)


def test_the_production_switches_pass_the_deploy_check(tmp_path):
    """`check --deploy` fails on warnings as production would set it up; the embedded default is not clean
    (plain HTTP on a laptop), which shows the check does look at the switches."""
    checked = run_with(tmp_path, ["manage.py", "check", "--deploy", "--fail-level", "WARNING"], **PRODUCTION)
    assert checked.returncode == 0, checked.stderr + checked.stdout
    default = run_with(tmp_path, ["manage.py", "check", "--deploy", "--fail-level", "WARNING"])
    assert default.returncode != 0
    for check in ["security.W004", "security.W008", "security.W012", "security.W016"]:  # HSTS, redirect, cookies
        assert check in default.stderr, check


def test_behind_a_tls_proxy_plain_http_is_redirected_and_https_is_strict(tmp_path):
    out = run_with(tmp_path, ["-c", HTTPS_PROBE], **PRODUCTION)
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout.strip().splitlines()[-1])
    assert s["plain"] == [301, "https://store.example.com/terms/"]
    assert s["secure"] == 200 and s["hsts"] == "max-age=31536000; includeSubDomains"
    assert "script-src 'self';" in s["csp"] and "frame-ancestors 'none'" in s["csp"]
    assert s["healthz"] != 301  # the container's own probe asks over plain HTTP

"""Shared fixtures: an isolated registry per test, a tiny model with the real tokenizer, service checks.

A test that needs PostgreSQL, Redis or Chromium calls `require(...)`: it skips with a reason locally, and fails
in CI, where `.ci/run` sets STORE_TESTS_NO_SKIP=1.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NO_SKIP = os.environ.get("STORE_TESTS_NO_SKIP") == "1"


def require(condition: bool, reason: str) -> None:
    if condition:
        return
    if NO_SKIP:
        pytest.fail(f"{reason} (STORE_TESTS_NO_SKIP=1: a missing service is a failure here)")
    pytest.skip(reason)


def pytest_report_header(config):
    from django.conf import settings

    engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    vendor = "postgresql" if "postgres" in engine else engine
    return [f"database: {vendor}", f"broker: {settings.CELERY_BROKER_URL.split('://')[0]}", f"no-skip: {NO_SKIP}"]


@pytest.fixture(autouse=True)
def registry_root(tmp_path, settings) -> Path:
    """Every test gets an empty registry of its own; the real models_registry/ is never touched."""
    root = tmp_path / "registry"
    root.mkdir()
    settings.MODELS_REGISTRY_ROOT = root
    return root


@pytest.fixture(autouse=True)
def empty_local_cache():
    """Pages and keys cached by an earlier test (under counters that its flush reset) never reach the next one."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(autouse=True)
def no_language_left_active():
    """A page requested in Chinese activates that language in the thread (LocaleMiddleware), and nothing turns it
    off after the test client's request: the next test in the same process would read its messages in Chinese."""
    from django.utils import translation

    translation.deactivate()
    yield
    translation.deactivate()


@pytest.fixture(autouse=True)
def rate_windows_that_never_turn(settings):
    """Rate limits count in fixed windows (a minute, an hour): a test that happens to cross a window's end would
    see its counters start again. Windows of about three years never turn during a test."""
    settings.RATE_LIMIT_WINDOW_SECONDS = 10**8
    settings.ANON_TRIAL_WINDOW_SECONDS = 10**8
    settings.SIGNUP_WINDOW_SECONDS = 10**8


@pytest.fixture(scope="session")
def real_gguf() -> Path:
    from apps.registry.base_model import base_model_gguf_path

    return base_model_gguf_path()


@pytest.fixture(scope="session")
def tiny_gguf(real_gguf, tmp_path_factory) -> Path:
    from tests.tiny_model import write_tiny_gguf

    return write_tiny_gguf(real_gguf, tmp_path_factory.mktemp("tiny") / "tiny.gguf")


@pytest.fixture(scope="session")
def tiny_hf_dir(tiny_gguf, tmp_path_factory) -> Path:
    """The tiny model as a Hugging Face folder (safetensors + the real tokenizer), built once per session."""
    from apps.registry.gguf_convert import convert_gguf

    out = tmp_path_factory.mktemp("tiny-hf") / "model"
    convert_gguf(tiny_gguf, out)
    return out


@pytest.fixture(scope="session")
def real_hf_dir(real_gguf, tmp_path_factory) -> Path:
    """The real base model converted from the wheel's GGUF file (about 25 s), once per session."""
    from apps.registry.gguf_convert import convert_gguf

    out = tmp_path_factory.mktemp("real-hf") / "model"
    convert_gguf(real_gguf, out)
    return out


@pytest.fixture
def tiny_version(db, tiny_hf_dir):
    """The tiny model registered as `smollm2-135m-instruct` v1 (alias latest) in this test's registry."""
    from django.conf import settings

    from apps.registry.services import model_version_register

    return model_version_register(name=settings.BASE_MODEL_ID, source_dir=tiny_hf_dir, description="tiny test model")


@pytest.fixture
def store(tiny_version, settings):
    """The tiny model as the base model, the built-in apps seeded, an fp32 engine."""
    from apps.catalog.services import store_seed
    from apps.inference import services as inference

    settings.INFERENCE_DTYPE = "float32"
    settings.INFERENCE_QUANTIZE = "none"
    inference.engine_reset()
    store_seed()
    yield
    inference.engine_reset()


@pytest.fixture
def user(db):
    from tests.factories import UserFactory

    return UserFactory()


@pytest.fixture
def other_user(db):
    from tests.factories import UserFactory

    return UserFactory()


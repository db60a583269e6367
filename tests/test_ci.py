"""Guards that CI ran the suite on the real services it promises."""

import os

import pytest
from django.db import connection

from tests.conftest import NO_SKIP


@pytest.mark.django_db
def test_ci_runs_on_postgresql():
    if not NO_SKIP:
        pytest.skip("only enforced in CI (STORE_TESTS_NO_SKIP=1); locally any database will do")
    assert connection.vendor == "postgresql", "CI must run the suite on PostgreSQL (DATABASE_URL)"


def test_ci_runs_on_redis():
    from django.conf import settings

    if not NO_SKIP:
        pytest.skip("only enforced in CI (STORE_TESTS_NO_SKIP=1)")
    assert settings.CELERY_BROKER_URL.startswith("redis://"), "CI must use Redis as the broker"
    assert os.environ.get("CI") == "true"

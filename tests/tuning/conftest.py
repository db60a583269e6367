"""Fixtures of the tuning tests that run jobs (a real worker, or the runner in this process)."""

import pytest

from tests.factories import UserFactory


@pytest.fixture
def setup(transactional_db, tiny_hf_dir, tmp_path, settings):
    """A user, and the tiny model registered as the base model, on a database that other processes see."""
    from apps.registry.services import model_version_register

    settings.MEDIA_ROOT = tmp_path / "media"
    settings.FINETUNE_WORK_ROOT = tmp_path / "finetune"
    settings.QUOTA_ACTIVE_JOBS = 5
    model_version_register(name=settings.BASE_MODEL_ID, source_dir=tiny_hf_dir)
    return UserFactory()

"""Knowledge files: an app with files indexed by the real service on the real tokenizer, on the suite's database."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.knowledge import services
from tests.catalog.conftest import make_app

GUIDE = """# Zephyr X200 guide

The Zephyr X200 is a handheld weather station made by Brightfield Instruments.

## Warranty

The warranty of the Zephyr X200 lasts 27 months from the day of purchase. Water damage is covered when the rubber
seal was closed.

## Battery

The battery holds a charge for 41 days. It charges over USB-C in about 90 minutes.

## 中文说明

泽菲尔气象站的保修期为二十七个月。电池续航四十一天。
"""


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def upload(app, user, name: str, content: bytes | str):
    data = content.encode() if isinstance(content, str) else content
    return services.knowledge_file_upload(app=app, user=user, upload=SimpleUploadedFile(name, data))


def index(knowledge):
    services.knowledge_file_index(file_id=knowledge.pk)
    knowledge.refresh_from_db()
    return knowledge


@pytest.fixture
def guide_app(store, user, media):
    """A public chatbot app of `user` with the guide indexed."""
    app = make_app(user, name="Zephyr Helper", visibility="public")
    knowledge = index(upload(app, user, "guide.md", GUIDE))
    assert knowledge.status == "ready", knowledge.message
    return app

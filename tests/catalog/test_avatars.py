import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.catalog.models import StoreApp

pytestmark = pytest.mark.django_db


def image_bytes(size=(300, 200), fmt="PNG") -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, (200, 40, 90)).save(out, format=fmt)
    return out.getvalue()


def form(**extra):
    return {
        "name": "Avatar App", "short_description": "x", "description": "", "kind": "chatbot", "instructions": "",
        "prompt_template": "", "conversation_starters": "", "model_reference": "smollm2-135m-instruct@latest",
        "temperature": 0.5, "top_p": 0.9, "max_tokens": 10, "repetition_penalty": 1.0, "category": "", **extra,
    }


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def test_uploaded_avatar_is_reencoded_and_served(client, store, user):
    client.force_login(user)
    upload = SimpleUploadedFile("me.jpg", image_bytes(fmt="JPEG"), content_type="image/jpeg")
    response = client.post("/build/new/", form(avatar=upload))
    assert response.status_code == 302
    app = StoreApp.objects.get(name="Avatar App")
    assert app.avatar.name.startswith("avatars/") and app.avatar.name.endswith(".png")
    served = client.get(app.avatar.url)
    assert served.status_code == 200 and served["Content-Type"] == "image/png"
    from PIL import Image

    with Image.open(io.BytesIO(b"".join(served.streaming_content))) as image:
        assert image.size == (256, 256) and image.format == "PNG"
    client.post(f"/build/{app.slug}/publish", {"visibility": "public"})
    assert f'src="{app.avatar.url}"' in client.get(f"/apps/{app.slug}/").content.decode()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"<?php echo 'not an image'; ?>", "not an image we can read"),
        (image_bytes(size=(20, 20)), "between 64 and 4096 pixels"),
        (image_bytes()[:200], "not an image we can read"),
        (b"\x89PNG" + b"0" * (1024 * 1024 + 10), "larger than 1 MB"),
    ],
)
def test_bad_avatars_are_refused_with_a_reason(client, store, user, content, message):
    client.force_login(user)
    response = client.post("/build/new/", form(avatar=SimpleUploadedFile("a.png", content, content_type="image/png")))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not StoreApp.objects.filter(name="Avatar App").exists()


def test_avatar_urls_cannot_reach_other_files(client, store):
    for name in ["..%2Fsecret_key", "x.txt", "0" * 32 + ".png"]:
        assert client.get(f"/media/avatars/{name}").status_code == 404

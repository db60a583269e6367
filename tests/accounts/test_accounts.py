import re

import pytest
from django.core import mail
from django.urls import reverse

from apps.accounts.models import User
from apps.registry.models import RegisteredModel
from tests.registry.test_services import make_source

pytestmark = pytest.mark.django_db
PASSWORD = "correct horse battery"


def test_custom_user_model_is_in_use(django_user_model):
    assert django_user_model is User
    assert User._meta.db_table == "accounts_user"


def test_signup_logs_in_and_shows_the_account_page(client):
    response = client.post(
        "/accounts/signup/",
        {"username": "alice", "email": "Alice@Example.com", "password1": "a-long-passphrase", "password2": "a-long-passphrase"},
        follow=True,
    )
    assert response.redirect_chain[-1][0] == "/accounts/"
    assert response.context["user"].username == "alice"
    assert User.objects.get(username="alice").email == "alice@example.com"
    assert b"Welcome, alice" in response.content


def test_signup_errors_are_shown_next_to_the_fields(client, user):
    response = client.post(
        "/accounts/signup/",
        {"username": "bob", "email": user.email.upper(), "password1": "short", "password2": "other"},
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "An account with this email already exists" in html
    assert "The two password fields didn" in html
    assert not User.objects.filter(username="bob").exists()


def test_login_and_logout_is_post_only(client, user):
    response = client.post("/accounts/login/", {"username": user.username, "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/accounts/"
    assert client.get("/accounts/").status_code == 200
    assert client.get("/accounts/logout/").status_code == 405
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert client.get("/accounts/")["Location"].startswith("/accounts/login/?next=/accounts/")


def test_wrong_password_is_refused_with_a_message(client, user):
    response = client.post("/accounts/login/", {"username": user.username, "password": "nope"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()


def test_account_page_edits_the_profile(client, user):
    client.force_login(user)
    response = client.post("/accounts/", {"first_name": "Ada", "last_name": "L", "email": user.email, "bio": "hi"})
    assert response.status_code == 302
    user.refresh_from_db()
    assert (user.first_name, user.bio) == ("Ada", "hi")


def test_password_change(client, user):
    client.force_login(user)
    response = client.post(
        "/accounts/password/",
        {"old_password": PASSWORD, "new_password1": "another-long-pass", "new_password2": "another-long-pass"},
    )
    assert response.status_code == 302 and response["Location"] == "/accounts/password/done/"
    user.refresh_from_db()
    assert user.check_password("another-long-pass")


def test_password_reset_by_email(client, user):
    response = client.post("/accounts/password/reset/", {"email": user.email})
    assert response.status_code == 302
    assert len(mail.outbox) == 1
    link = re.search(r"http://testserver(/accounts/password/reset/\S+/)", mail.outbox[0].body).group(1)
    response = client.get(link, follow=True)
    form_url = response.redirect_chain[-1][0]
    response = client.post(form_url, {"new_password1": "brand-new-secret", "new_password2": "brand-new-secret"})
    assert response.status_code == 302 and response["Location"] == "/accounts/password/reset/done/"
    user.refresh_from_db()
    assert user.check_password("brand-new-secret")
    # The link works once.
    assert "invalid or was already used" in client.get(form_url).content.decode()


def test_delete_account_needs_the_password_and_removes_owned_data(
    client, user, other_user, tmp_path, registry_root, django_capture_on_commit_callbacks
):
    from apps.registry.services import model_version_register

    model_version_register(name="alice-model", source_dir=make_source(tmp_path, name="a"), owner=user)
    model_version_register(name="bob-model", source_dir=make_source(tmp_path, name="b"), owner=other_user)
    client.force_login(user)
    response = client.post("/accounts/delete/", {"password": "wrong"})
    assert response.status_code == 200 and "That is not your password" in response.content.decode()
    assert User.objects.filter(pk=user.pk).exists()

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/accounts/delete/", {"password": PASSWORD})
    assert response.status_code == 302
    assert not User.objects.filter(pk=user.pk).exists()
    assert not RegisteredModel.objects.filter(name="alice-model").exists()
    assert not (registry_root / "alice-model").exists()
    assert RegisteredModel.objects.filter(name="bob-model").exists() and (registry_root / "bob-model" / "1").is_dir()
    assert "_auth_user_id" not in client.session


@pytest.mark.parametrize("url", ["/accounts/", "/accounts/delete/", "/accounts/password/"])
def test_account_pages_need_login(client, url):
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith(reverse("accounts:login"))


def test_delete_account_with_files_jobs_apps_and_fine_tunes(client, user, tiny_version, tiny_hf_dir, settings, tmp_path,
                                                           django_capture_on_commit_callbacks):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from apps.catalog.models import StoreApp
    from apps.registry.services import model_version_register
    from apps.tuning import services as tuning
    from apps.tuning.models import FineTuningJob, TrainingFile
    from tests.tuning.test_jobs import chat_lines

    settings.MEDIA_ROOT = tmp_path / "media"
    f = tuning.training_file_create(owner=user, upload=SimpleUploadedFile("a.jsonl", chat_lines().encode()))
    tuning.training_file_validate(file_id=f.pk)
    first = model_version_register(name="ft:smollm2-135m-instruct:me::ftjob-1", source_dir=tiny_hf_dir, owner=user, base_version=tiny_version)
    job = tuning.finetune_job_create(owner=user, training_file=TrainingFile.objects.get(pk=f.pk), model="ft:smollm2-135m-instruct:me::ftjob-1")
    model_version_register(name="ft:smollm2-135m-instruct:me::ftjob-2", source_dir=tiny_hf_dir, owner=user, base_version=first)
    StoreApp.objects.create(slug="mine", name="Mine", short_description="x", creator=user, model_reference="ft:smollm2-135m-instruct:me::ftjob-2")
    path = TrainingFile.objects.get(pk=f.pk).file.path
    client.force_login(user)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/accounts/delete/", {"password": PASSWORD})
    assert response.status_code == 302
    assert not User.objects.filter(pk=user.pk).exists()
    assert not FineTuningJob.objects.filter(pk=job.pk).exists() and not TrainingFile.objects.exists()
    assert not RegisteredModel.objects.filter(owner__isnull=False).exists() and not StoreApp.objects.filter(slug="mine").exists()
    assert not __import__("os").path.exists(path)


def test_api_keys_on_the_account_page_and_usage(client, user, store):
    import json

    from apps.accounts.models import APIKey

    client.force_login(user)
    response = client.post("/accounts/keys/new", {"name": "laptop", "expires_in_days": 30})
    raw = re.search(r'<code id="new-key">(sk-store-[^<]+)</code>', response.content.decode()).group(1)
    key = APIKey.objects.get(user=user)
    assert key.name == "laptop" and key.expires_at is not None and raw not in str(APIKey.objects.values().get())
    body = {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    assert client.post("/v1/chat/completions", data=json.dumps(body), content_type="application/json",
                       HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200
    html = client.get("/accounts/").content.decode()
    assert "laptop" in html and key.prefix in html and raw not in html
    assert "1 requests" in html and "3 completion tokens" in html and "smollm2-135m-instruct@v1" in html
    assert "By API key" in html
    client.post(f"/accounts/keys/{key.pk}/revoke")
    assert client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401
    from tests.factories import UserFactory

    client.force_login(UserFactory())
    assert client.post(f"/accounts/keys/{key.pk}/revoke").status_code == 404

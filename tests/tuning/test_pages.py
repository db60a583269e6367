"""The /customize/ pages: upload with a line-numbered report, the estimate, the job page and its live status."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.tuning import services
from apps.tuning.models import FineTuningJob, JobMetric, TrainingFile
from tests.tuning.test_jobs import chat_lines

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def upload_via_page(client, content: bytes, name="data.jsonl") -> TrainingFile:
    response = client.post("/customize/", {"file": SimpleUploadedFile(name, content)})
    f = TrainingFile.objects.latest("created_at")
    assert response.status_code == 302 and response["Location"] == f"/customize/files/{f.public_id}/"
    return services.training_file_validate(file_id=f.pk)  # what the worker's task does


def test_customize_needs_login(client):
    assert client.get("/customize/")["Location"].startswith("/accounts/login/")


def test_bad_file_shows_each_problem_with_its_line(client, user, tiny_version):
    client.force_login(user)
    content = (chat_lines(11) + '{"messages": [{"role": "user", "content": "?"}]}\n{broken\n').encode()
    f = upload_via_page(client, content)
    html = client.get(f"/customize/files/{f.public_id}/").content.decode()
    assert "Problems to fix" in html
    assert "Line 12" in html and "no assistant message" in html
    assert "Line 13" in html and "not valid JSON" in html


def test_good_file_shows_counts_and_preview_then_a_job_starts(client, user, tiny_version, django_capture_on_commit_callbacks):
    client.force_login(user)
    f = upload_via_page(client, chat_lines(24).encode(), "pirate.jsonl")
    html = client.get(f"/customize/files/{f.public_id}/").content.decode()
    assert "Ready for training" in html and "Arr, matey!" in html and ">24<" in html

    estimate = client.get("/customize/estimate", {"training_file": f.public_id, "method": "lora", "n_epochs": 2}).json()
    assert estimate["steps"] == 12 and estimate["hyperparameters"]["n_epochs"] == 2 and estimate["seconds_cpu"] > 0
    assert client.get("/customize/estimate", {"training_file": f.public_id, "n_epochs": "x"}).status_code == 400

    page = client.get("/customize/").content.decode()
    assert f.public_id in page and "smollm2-135m-instruct" in page
    response = client.post("/customize/jobs/new", {"training_file": f.public_id, "model": "smollm2-135m-instruct", "method": "lora",
                                                   "n_epochs": "2", "batch_size": "auto", "learning_rate_multiplier": "auto",
                                                   "lora_rank": "auto", "suffix": "pirate", "seed": 3})
    job = FineTuningJob.objects.get()
    assert response["Location"] == f"/customize/jobs/{job.public_id}/"
    assert job.hyperparameters["n_epochs"] == 2 and job.suffix == "pirate"
    JobMetric.objects.create(job=job, step=1, train_loss=2.5, learning_rate=1e-3, tokens_per_second=100)
    html = client.get(f"/customize/jobs/{job.public_id}/").content.decode()
    assert "Cancel job" in html and 'role="img"' in html
    state = client.get(f"/customize/jobs/{job.public_id}/status").json()
    assert state["status"] == "validating_files" and state["queue_position"] == 1
    assert [m["train_loss"] for m in state["metrics"]] == [2.5] and state["events"][0]["message"].startswith("Created")
    again = client.get(f"/customize/jobs/{job.public_id}/status", {"after_metric": state["metrics"][-1]["id"], "after_event": state["events"][-1]["id"]}).json()
    assert again["metrics"] == [] and again["events"] == []
    client.post(f"/customize/jobs/{job.public_id}/cancel")
    assert FineTuningJob.objects.get().status == "cancelled"


def test_finished_job_notice_and_build_button(client, user, tiny_version):
    f = services.training_file_create(owner=user, upload=SimpleUploadedFile("a.jsonl", chat_lines(24).encode()))
    services.training_file_validate(file_id=f.pk)
    job = services.finetune_job_create(owner=user, training_file=TrainingFile.objects.get(pk=f.pk), model="smollm2-135m-instruct")
    FineTuningJob.objects.filter(pk=job.pk).update(status="succeeded", fine_tuned_model="ft:smollm2-135m-instruct:u::x")
    client.force_login(user)
    assert f"Fine-tuning job {job.public_id} succeeded." in client.get("/").content.decode()
    html = client.get(f"/customize/jobs/{job.public_id}/").content.decode()
    assert "Build an app with this model" in html and "?model=ft%3Asmollm2-135m-instruct%3Au%3A%3Ax%40latest" in html
    assert f"Fine-tuning job {job.public_id}" not in client.get("/").content.decode()  # seen: the notice is gone


def test_another_user_gets_404_on_every_customize_page(client, user, other_user, tiny_version):
    f = services.training_file_create(owner=user, upload=SimpleUploadedFile("a.jsonl", chat_lines(24).encode()))
    services.training_file_validate(file_id=f.pk)
    job = services.finetune_job_create(owner=user, training_file=TrainingFile.objects.get(pk=f.pk), model="smollm2-135m-instruct")
    client.force_login(other_user)
    for url in [f"/customize/files/{f.public_id}/", f"/customize/jobs/{job.public_id}/", f"/customize/jobs/{job.public_id}/status"]:
        assert client.get(url).status_code == 404, url
    assert client.post(f"/customize/jobs/{job.public_id}/cancel").status_code == 404
    estimate = client.get("/customize/estimate", {"training_file": f.public_id})  # the access helper's 404, as on the API faces
    assert estimate.status_code == 404 and estimate.json()["error"]["code"] == "file_not_found"
    assert f.public_id not in client.get("/customize/").content.decode()
    response = client.post("/customize/jobs/new", {"training_file": f.public_id, "model": "smollm2-135m-instruct", "method": "lora",
                                                   "n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto", "lora_rank": "auto"})
    assert response.status_code == 302 and FineTuningJob.objects.count() == 1
    job.refresh_from_db()
    assert job.status == "validating_files"


def test_estimate_errors_have_the_error_shape_of_every_face(client, user, tiny_version):
    client.force_login(user)
    f = upload_via_page(client, chat_lines(24).encode())
    for query, param in [({}, "training_file"), ({"training_file": f.public_id, "n_epochs": "x"}, "hyperparameters"),
                         ({"training_file": f.public_id, "method": "rlhf"}, "method")]:
        response = client.get("/customize/estimate", query)
        assert response.status_code == 400, query
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["param"] == param

"""Jobs created while their files are checked (OpenAI's behaviour), metadata, `estimated_finish`, and deleting a
fine-tune on /v1. The database and the services, no worker: each test calls what the validation task and beat call."""

import json
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from apps.accounts.services import api_key_create
from apps.core.errors import InvalidRequest
from apps.registry.models import RegisteredModel
from apps.registry.services import model_version_register
from apps.tuning import services
from apps.tuning.models import FineTuningJob, JobMetric, TrainingFile
from tests.tuning.test_jobs import chat_lines

pytestmark = pytest.mark.django_db
BASE = "smollm2-135m-instruct"


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.QUOTA_ACTIVE_JOBS = 10


def upload(user, content: str, name: str = "a.jsonl") -> TrainingFile:
    return services.training_file_create(owner=user, upload=SimpleUploadedFile(name, content.encode()))


def processed(f: TrainingFile, examples: int = 24, fmt: str = "chat") -> TrainingFile:
    """What the validation task writes for a good file (without loading a tokenizer)."""
    f.status, f.format, f.example_count, f.token_count = TrainingFile.Status.PROCESSED, fmt, examples, examples * 20
    f.save()
    return f


def headers(user) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {api_key_create(user=user, name='k')[1]}"}


def test_a_job_waits_for_its_files_and_starts_when_the_last_is_processed(tiny_version, user, media, django_capture_on_commit_callbacks):
    training, validation = upload(user, chat_lines()), upload(user, chat_lines(3), "val.jsonl")
    job = services.finetune_job_create(owner=user, training_file=training, validation_file=validation, model=BASE,
                                       hyperparameters={"batch_size": 2})
    assert job.status == "validating_files" and job.dispatched_at is None and job.estimate == {}
    assert job.hyperparameters == {"n_epochs": "auto", "batch_size": 2, "learning_rate_multiplier": "auto", "lora_rank": "auto",
                                   "lora_alpha": "auto"}
    assert job.events.last().message == f"Waiting for {training.public_id}, {validation.public_id} to be processed; the job starts once it is."

    # The real check of the training file (the task's first half), then the task's second half.
    checked = services.training_file_validate(file_id=training.pk)
    assert checked.status == "processed" and checked.example_count == 24
    assert services.finetune_jobs_start_waiting(training_file=checked) == []  # the validation file is still being checked
    # A validation file of 3 examples is valid: OpenAI asks a training file for 10, a validation file for none.
    checked = services.training_file_validate(file_id=validation.pk)
    assert checked.status == "processed" and checked.example_count == 3
    with django_capture_on_commit_callbacks() as sent:
        assert services.finetune_jobs_start_waiting(training_file=checked) == [job.public_id]
    job.refresh_from_db()
    assert job.status == "validating_files" and job.dispatched_at is not None
    assert job.hyperparameters["n_epochs"] == 5 and job.hyperparameters["batch_size"] == 2 and job.estimate["steps"] == 60
    assert job.events.last().message == "Files processed; the job is queued."
    assert len(sent) == 1  # the run message, once the transaction commits
    assert services.finetune_jobs_start_waiting() == []  # started once: beat's sweep finds nothing more to do


def test_a_file_that_ends_in_error_fails_the_job_with_openai_s_error(tiny_version, user, media, client):
    bad = chat_lines(12) + '{"messages": [{"role": "user", "content": "no answer"}]}\n{oops\n'
    training = upload(user, bad)
    job = services.finetune_job_create(owner=user, training_file=training, model=BASE, metadata={"run": "7"})
    services.finetune_jobs_start_waiting(training_file=services.training_file_validate(file_id=training.pk))
    job.refresh_from_db()
    assert job.status == "failed" and job.error_code == "invalid_training_file" and job.finished_at is not None
    assert job.error_message.startswith(f"The training file {training.public_id} has problems: line 13: no assistant message")
    assert "line 14: not valid JSON" in job.error_message
    body = client.get(f"/v1/fine_tuning/jobs/{job.public_id}", **headers(user)).json()
    assert body["status"] == "failed" and body["metadata"] == {"run": "7"}
    assert body["error"] == {"code": "invalid_training_file", "message": job.error_message, "param": "training_file"}

    # A validation file with problems: `invalid_validation_file`. A file already known bad is refused at once.
    good, broken = processed(upload(user, chat_lines())), upload(user, "{oops\n", "val.jsonl")
    job = services.finetune_job_create(owner=user, training_file=good, validation_file=broken, model=BASE)
    services.finetune_jobs_start_waiting(training_file=services.training_file_validate(file_id=broken.pk))
    job.refresh_from_db()
    assert job.status == "failed" and job.error_code == "invalid_validation_file" and "line 1: not valid JSON" in job.error_message
    with pytest.raises(InvalidRequest) as refused:
        services.finetune_job_create(owner=user, training_file=good, validation_file=TrainingFile.objects.get(pk=broken.pk), model=BASE)
    assert refused.value.code == "invalid_validation_file" and refused.value.param == "validation_file"


def test_a_training_file_needs_ten_examples_a_validation_file_one(tiny_version, user, media):
    small = processed(upload(user, chat_lines(3)), examples=3)
    with pytest.raises(InvalidRequest) as refused:
        services.finetune_job_create(owner=user, training_file=small, model=BASE)
    assert refused.value.code == "invalid_training_file"
    assert refused.value.message == f"The training file {small.public_id} has 3 example(s); a training file needs at least 10."
    job = services.finetune_job_create(owner=user, training_file=processed(upload(user, chat_lines())), validation_file=small,
                                       model=BASE)
    assert job.dispatched_at is not None and job.estimate["steps"] == 30
    # Waiting, then processed with too few examples: the job fails with the same error.
    waiting = services.finetune_job_create(owner=user, training_file=(later := upload(user, chat_lines(3))), model=BASE)
    processed(later, examples=3)
    assert services.finetune_jobs_start_waiting(training_file=later) == []
    waiting.refresh_from_db()
    assert waiting.status == "failed" and waiting.error_code == "invalid_training_file" and "at least 10" in waiting.error_message
    # An empty file has no example at all: it is not `processed`.
    empty = services.training_file_validate(file_id=upload(user, "\n", "empty.jsonl").pk)
    assert empty.status == "error" and empty.problems == [{"line": None, "message": "the file has no examples"}]


def test_a_lost_check_fails_its_job_after_the_time_limit_and_beat_ignores_waiting_jobs(tiny_version, user, media, settings):
    settings.TRAINING_FILE_VALIDATION_TIMEOUT = 600
    fresh, lost = upload(user, chat_lines()), upload(user, chat_lines())
    waits = services.finetune_job_create(owner=user, training_file=fresh, model=BASE)
    dies = services.finetune_job_create(owner=user, training_file=lost, model=BASE)
    TrainingFile.objects.filter(pk=lost.pk).update(created_at=timezone.now() - timedelta(seconds=601))  # its worker died
    FineTuningJob.objects.filter(pk__in=[waits.pk, dies.pk]).update(updated_at=timezone.now() - timedelta(hours=1))
    assert services.requeue_stale_jobs() == []  # beat: no job was sent again, none started
    waits.refresh_from_db()
    dies.refresh_from_db()
    assert waits.status == "validating_files" and waits.dispatched_at is None and waits.lost_messages == 0
    assert dies.status == "failed" and dies.error_code == "file_validation_timeout"
    assert dies.error_message == (f"The training file {lost.public_id} was not checked within 10 min of its upload (the worker "
                                  "checking it stopped). Upload it again, then create the job again.")
    with pytest.raises(InvalidRequest) as refused:  # and a new job on that file is refused at once
        services.finetune_job_create(owner=user, training_file=TrainingFile.objects.get(pk=lost.pk), model=BASE)
    assert refused.value.code == "file_validation_timeout"
    # Beat is the safety net: a file processed while nobody looked starts its job at the next sweep.
    processed(fresh)
    assert services.requeue_stale_jobs() == [waits.public_id]


def test_a_waiting_job_cancelled_stays_cancelled(tiny_version, user, media):
    f = upload(user, chat_lines())
    job = services.finetune_job_create(owner=user, training_file=f, model=BASE)
    services.finetune_job_cancel(job=job)
    assert services.finetune_jobs_start_waiting(training_file=processed(f)) == []
    job.refresh_from_db()
    assert job.status == "cancelled" and job.dispatched_at is None


def test_the_page_offers_files_being_checked_and_starts_a_waiting_job(tiny_version, user, media, client):
    f = upload(user, chat_lines())
    client.force_login(user)
    page = client.get("/customize/").content.decode()
    assert f"{f.filename} · being checked" in page
    estimate = client.get("/customize/estimate", {"training_file": f.public_id})
    assert estimate.status_code == 400 and "still being checked" in estimate.json()["error"]["message"]
    response = client.post("/customize/jobs/new", {"training_file": f.public_id, "model": BASE, "method": "lora", "n_epochs": "auto",
                                                "batch_size": "auto", "learning_rate_multiplier": "auto", "lora_rank": "auto", "seed": 42})
    job = FineTuningJob.objects.get(owner=user)
    assert response.status_code == 302 and response["Location"] == f"/customize/jobs/{job.public_id}/"
    assert job.status == "validating_files" and job.estimate == {}


def test_metadata_follows_openai_s_rules_and_filters_the_list(tiny_version, user, other_user, media, client):
    f = processed(upload(user, chat_lines()))
    mine = headers(user)

    def create(**body):
        return client.post("/v1/fine_tuning/jobs", data=json.dumps({"model": BASE, "training_file": f.public_id, **body}),
                           content_type="application/json", **mine)

    too_many = {f"k{i}": "v" for i in range(17)}
    for metadata in (too_many, {"k" * 65: "v"}, {"k": "v" * 513}, {"k": 3}, ["k"]):
        response = create(metadata=metadata)
        assert response.status_code == 400 and response.json()["error"]["param"] == "metadata", (metadata, response.content)
    first = create(metadata={"team": "sea", "odd key__x": "1"}).json()
    second = create(metadata={"team": "land"}).json()
    plain = create().json()
    assert first["metadata"] == {"team": "sea", "odd key__x": "1"} and plain["metadata"] is None
    assert len(create(metadata={f"k{i}": "v" * 512 for i in range(16)}).json()["metadata"]) == 16

    def listed(query):
        return [j["id"] for j in client.get(f"/v1/fine_tuning/jobs?{query}", **mine).json()["data"]]

    assert listed("metadata[team]=sea") == [first["id"]]
    assert listed("metadata[team]=land") == [second["id"]]
    assert listed("metadata[odd key__x]=1&metadata[team]=sea") == [first["id"]]
    assert listed("metadata[team]=sea&metadata[odd key__x]=2") == []
    assert listed("metadata=null") == [plain["id"]]
    assert client.get("/v1/fine_tuning/jobs?metadata[team]=sea", **headers(other_user)).json()["data"] == []


def test_estimated_finish_comes_from_the_pace_of_the_last_steps(tiny_version, user, media, client):
    job = services.finetune_job_create(owner=user, training_file=processed(upload(user, chat_lines())), model=BASE)
    url = f"/v1/fine_tuning/jobs/{job.public_id}"
    assert client.get(url, **headers(user)).json()["estimated_finish"] is None  # not running
    FineTuningJob.objects.filter(pk=job.pk).update(status="running", step=10, total_steps=30)
    now = timezone.now()
    for step, ago in ((8, 4.0), (10, 0.0)):  # 2 s a step
        metric = JobMetric.objects.create(job=job, step=step, train_loss=1.0)
        JobMetric.objects.filter(pk=metric.pk).update(created_at=now - timedelta(seconds=ago))
    finish = client.get(url, **headers(user)).json()["estimated_finish"]
    assert abs(finish - (now.timestamp() + 40)) <= 3  # 20 steps left
    native = client.get(f"/api/v1/jobs/{job.public_id}/", **headers(user)).json()
    assert abs(native["estimated_finish"] - finish) <= 2 and native["metadata"] == {}


def test_deleting_a_fine_tune_on_v1(tiny_version, tiny_hf_dir, user, other_user, media, client, django_capture_on_commit_callbacks):
    from tests.catalog.conftest import make_app

    mine, theirs = headers(user), headers(other_user)
    name = f"ft:{BASE}:{user.username}::ftjob-1"
    version = model_version_register(name=name, source_dir=tiny_hf_dir, owner=user, base_version=tiny_version)
    folder = version.path.parent
    assert folder.is_dir()

    def delete(model, auth):
        return client.delete(f"/v1/models/{model}", **auth)

    assert delete(name, theirs).status_code == 404 and delete(name, theirs).json()["error"]["code"] == "model_not_found"
    assert delete("no-such-model", mine).status_code == 404
    base = delete(BASE, mine)
    assert base.status_code == 403 and base.json()["error"]["code"] == "not_owner"
    assert delete("app:chatbot", mine).status_code in (400, 404)

    # A fine-tune built on it, or on one of its kept checkpoints, keeps it.
    child = model_version_register(name=f"ft:{BASE}:{user.username}::ftjob-2", source_dir=tiny_hf_dir, owner=user, base_version=version)
    refused = delete(name, mine)
    assert refused.status_code == 409 and refused.json()["error"]["message"].startswith(
        f"Fine-tunes are built on this model or its checkpoints ({child.registered_model.name})")
    RegisteredModel.objects.filter(pk=child.registered_model_id).delete()
    checkpoint = model_version_register(name=f"{name}:ckpt-step-4", source_dir=tiny_hf_dir, owner=user, base_version=tiny_version)
    grandchild = model_version_register(name=f"ft:{BASE}:{user.username}::ftjob-3", source_dir=tiny_hf_dir, owner=user,
                                        base_version=checkpoint)
    assert grandchild.registered_model.name in delete(name, mine).json()["error"]["message"]
    RegisteredModel.objects.filter(pk=grandchild.registered_model_id).delete()
    # A job training from it keeps it; an app running on it too.
    job = services.finetune_job_create(owner=user, training_file=processed(upload(user, chat_lines())), model=BASE)
    FineTuningJob.objects.filter(pk=job.pk).update(base_version=version)
    assert delete(name, mine).json()["error"]["message"] == f"The fine-tuning job {job.public_id} uses this model: cancel it or wait for it to end."
    services.finetune_job_cancel(job=job)
    app = make_app(user, name="On my model", model_reference=f"{name}@latest")
    assert delete(name, mine).status_code == 409
    app.delete()

    with django_capture_on_commit_callbacks(execute=True):
        deleted = delete(name, mine)
        assert folder.exists()  # its files go only once the deletion is committed
    assert deleted.status_code == 200 and deleted.json() == {"id": name, "object": "model", "deleted": True}
    assert not RegisteredModel.objects.filter(name=name).exists() and not folder.exists()
    job.refresh_from_db()
    assert job.base_version is None and job.base_reference == BASE  # the finished job's record stays
    assert delete(name, mine).status_code == 404


def test_the_files_list_takes_openai_s_order_and_purpose(tiny_version, user, media, client):
    first, second = upload(user, chat_lines()), upload(user, chat_lines())
    mine = headers(user)

    def listed(query):
        return [f["id"] for f in client.get(f"/v1/files?{query}", **mine).json()["data"]]

    assert listed("") == listed("order=desc") == [second.public_id, first.public_id]
    assert listed("order=asc") == [first.public_id, second.public_id]
    assert listed(f"order=asc&after={first.public_id}") == [second.public_id]
    assert listed("purpose=fine-tune") == [second.public_id, first.public_id] and listed("purpose=batch") == []
    refused = client.get("/v1/files?order=up", **mine)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "order"

"""Issue 16, pre-training from scratch (method `scratch`): bad text gets line numbers, the GPU presets are refused
where no GPU worker runs, and one real job (the `micro` preset, seconds of training) registers a private plain
language model whose held-out perplexity fell at least tenfold, which its owner calls and fine-tunes (LoRA on
prompt/completion data) and another user can neither see nor use."""

import json
import random

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from apps.core.errors import InvalidRequest, NotFound
from apps.registry.models import ModelVersion
from apps.tuning import services
from apps.tuning.hyperparameters import training_estimate
from apps.tuning.models import JobMetric
from apps.tuning.trainer.presets import PRESETS
from tests.factories import UserFactory
from tests.tuning.test_jobs import chat_lines
from tests.tuning.test_runner import child_env  # noqa: F401 - the fixture: the trainer child's environment
from tests.tuning.test_versions import bearer, engine, run  # noqa: F401 - engine: a fixture

BASE = "smollm2-135m-instruct"


def corpus(n=120) -> str:
    """A small, repetitive corpus: a model from scratch learns it within a few dozen steps."""
    rng = random.Random(0)
    animals = ["cat", "dog", "bird", "fox"]
    return "\n\n".join(f"The {a} sat on the mat. The {a} is happy and the {a} sleeps." for a in
                       (rng.choice(animals) for _ in range(n)))


def upload(user, content: bytes | str, name: str):
    data = content.encode() if isinstance(content, str) else content
    f = services.training_file_create(owner=user, upload=SimpleUploadedFile(name, data))
    return services.training_file_validate(file_id=f.pk)


def test_text_with_binary_lines_gets_their_line_numbers(setup):
    user = setup
    broken = upload(user, b"A first line of text.\n\nA second\x00 line.\nfine\n", "book.txt")
    assert broken.status == "error"
    assert {"line": 3, "message": "holds the control character U+0000: is this a binary file?"} in broken.problems
    not_utf8 = upload(user, b"Some text.\n\nMore text.\n\xff\xfe\n", "book.txt")
    assert not_utf8.problems == [{"line": 4, "message": "the file is not UTF-8 text"}]
    chat = upload(user, chat_lines(12), "chat.jsonl")
    with pytest.raises(InvalidRequest, match="pre-training from scratch take a plain-text file"):
        services.finetune_job_create(owner=user, training_file=chat, model=BASE, method="scratch")


def test_gpu_presets_are_refused_without_a_gpu_worker(setup, settings):
    user = setup
    text = upload(user, corpus(), "book.txt")
    settings.FINETUNE_GPU_WORKER = False
    for preset in ("small", "base"):
        with pytest.raises(InvalidRequest, match=f"The {preset} preset trains on a GPU, and this store has no GPU worker") as exc:
            services.finetune_job_create(owner=user, training_file=text, model=BASE, method="scratch",
                                         hyperparameters={"preset": preset})
        assert exc.value.code == "preset_needs_gpu" and exc.value.param == "hyperparameters.preset"
    with pytest.raises(InvalidRequest, match="preset is out of range; use micro or tiny or small or base"):
        services.finetune_job_create(owner=user, training_file=text, model=BASE, method="scratch",
                                     hyperparameters={"preset": "huge"})
    with pytest.raises(InvalidRequest, match="preset is for method scratch only"):
        services.finetune_job_create(owner=user, training_file=text, model=BASE, method="pretrain",
                                     hyperparameters={"preset": "tiny"})
    settings.FINETUNE_GPU_WORKER = True  # a GPU worker takes the gpu queue: the job is accepted
    job = services.finetune_job_create(owner=user, training_file=text, model=BASE, method="scratch",
                                       hyperparameters={"preset": "small"})
    assert job.hyperparameters["preset"] == "small" and job.estimate["parameters"] > 40_000_000


def test_the_estimate_follows_the_preset():
    hyper = {"preset": "tiny", "batch_size": 8, "n_epochs": 2}
    estimate = training_estimate(method="scratch", hyperparameters=hyper, examples=10, tokens=256 * 80)
    assert estimate["steps"] == 20 and estimate["tokens"] == 2 * 256 * 80
    assert estimate["seconds_cpu"] == round(2 * 256 * 80 / PRESETS["tiny"].cpu_tokens_per_second)
    assert 5_000_000 <= estimate["parameters"] <= 15_000_000  # `tiny` is 5-15 M parameters with the base tokenizer


def completions(client, key, model, **extra):
    return client.post("/v1/completions", {"model": model, "prompt": "The cat", "max_tokens": 4, "temperature": 0, **extra},
                       content_type="application/json", **key)


def test_a_scratch_model_is_private_learns_its_text_and_takes_a_lora(setup, child_env, engine, client, settings):  # noqa: F811
    user, other = setup, UserFactory()
    settings.FINETUNE_CHECKPOINT_STEPS = 8
    text = upload(user, corpus(), "animals.txt")
    assert text.status == "processed", text.problems
    job = run(services.finetune_job_create(owner=user, training_file=text, model=BASE, method="scratch", suffix="zoo",
                                           hyperparameters={"preset": "micro", "n_epochs": 2, "batch_size": 4}))
    version = job.result_version
    name = version.registered_model.name
    assert name == f"ft:scratch-micro:{user.slug}:zoo:{job.public_id}" == job.fine_tuned_model
    assert (version.task, version.kind, version.base_version) == (ModelVersion.Task.TEXT, ModelVersion.Kind.FULL, None)
    assert version.registered_model.owner == user and version.registered_model.visibility == "private"

    # Held-out perplexity: untrained, about the vocabulary's size; trained, at most a tenth of it.
    before, after = version.metrics["perplexity_before"], version.metrics["perplexity_after"]
    assert before > 10_000 and after <= before / 10, (before, after)
    assert JobMetric.objects.filter(job=job, val_loss__isnull=False).count() >= 2  # the job page's curve
    assert any("perplexity" in json.dumps(e.data) for e in job.events.all()), "each checkpoint reports its perplexity"
    folder = version.path
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))
    assert json.loads((folder / "tokenizer_config.json").read_text()).get("chat_template") is None
    assert not (folder / "chat_template.jinja").exists()
    card = (folder / "README.md").read_text()
    for fact in ("Pre-trained from scratch", "animals.txt", "preset micro", "tokens", f"{after:,.2f}", "steps"):
        assert fact in card, fact

    # Its owner lists and calls it (a chat becomes a plain prompt: it has no chat template); another user cannot.
    key, others = bearer(user), bearer(other)
    assert name in [m["id"] for m in client.get("/v1/models", **key).json()["data"]]
    assert name not in [m["id"] for m in client.get("/v1/models", **others).json()["data"]]
    assert completions(client, key, name).status_code == 200
    chat = client.post("/v1/chat/completions", {"model": name, "max_tokens": 3, "temperature": 0,
                                                "messages": [{"role": "user", "content": "The dog"}]},
                       content_type="application/json", **key)
    assert chat.status_code == 200, chat.content
    assert completions(client, others, name).status_code == 404
    assert client.get(f"/v1/models/{name}", **others).status_code == 404
    with pytest.raises(NotFound):
        services.finetune_job_create(owner=other, training_file=upload(other, corpus(), "mine.txt"), model=name,
                                     method="pretrain")

    # Fine-tuned by its owner: LoRA on prompt/completion data (chat data is refused: no chat template).
    chat_file = upload(user, chat_lines(12), "chat.jsonl")
    with pytest.raises(InvalidRequest, match="plain language model with no chat template"):
        services.finetune_job_create(owner=user, training_file=chat_file, model=name)
    pairs = "\n".join(json.dumps({"prompt": f"The {a} sat on", "completion": " the mat."})
                      for a in ["cat", "dog", "bird", "fox"] * 3)
    lora = run(services.finetune_job_create(owner=user, training_file=upload(user, pairs, "pairs.jsonl"), model=name,
                                            hyperparameters={"n_epochs": 1, "batch_size": 4}))
    tuned = lora.result_version
    assert tuned.kind == ModelVersion.Kind.LORA and tuned.task == ModelVersion.Task.TEXT and tuned.base_version == version
    assert lora.fine_tuned_model.startswith(f"ft:scratch-micro:{user.slug}::")
    assert completions(client, key, lora.fine_tuned_model).status_code == 200


def test_the_openai_face_takes_method_scratch_with_its_preset(setup, client, settings):
    user = setup
    key = bearer(user)
    text = upload(user, corpus(), "book.txt")
    settings.FINETUNE_GPU_WORKER = False

    def create(hyperparameters):
        return client.post("/v1/fine_tuning/jobs", {"model": BASE, "training_file": text.public_id, "method": {
            "type": "scratch", "scratch": {"hyperparameters": hyperparameters}}}, content_type="application/json", **key)

    refused = create({"preset": "small"})
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "preset_needs_gpu" and "GPU" in error["message"]
    accepted = create({"preset": "micro", "tokenizer": "bpe", "n_epochs": 1})
    assert accepted.status_code == 200, accepted.content
    body = accepted.json()
    assert body["method"]["type"] == "scratch" and body["status"] in ("validating_files", "queued")
    job = user.finetuning_jobs.get(public_id=body["id"])
    assert (job.method, job.hyperparameters["preset"], job.hyperparameters["tokenizer"]) == ("scratch", "micro", "bpe")


def test_the_customize_page_explains_the_five_methods_with_example_files(setup, client):
    from django.contrib.staticfiles import finders

    client.force_login(setup)
    upload(setup, corpus(), "book.txt")  # the job form shows once there is a file to train on
    page = client.get("/customize/").content.decode()
    for method in ("lora", "full", "pretrain", "classification", "scratch"):
        assert f'data-method="{method}"' in page
    for example in ("chat.jsonl", "prompt_completion.jsonl", "pretrain.txt", "classification.jsonl", "scratch.txt"):
        assert f"tuning/examples/{example}" in page
        path = finders.find(f"tuning/examples/{example}")
        assert path, example
        expected = {"chat.jsonl": None, "prompt_completion.jsonl": None, "classification.jsonl": "classification"}
        # Each example passes the checks of its own format (a training file's minimum of 10 examples included).
        from apps.tuning.trainer.data import validate_file

        report = validate_file(path, expected="text" if example.endswith(".txt") else expected.get(example))
        assert report.ok, (example, report.problems)
    assert 'name="preset"' in page and 'name="tokenizer"' in page

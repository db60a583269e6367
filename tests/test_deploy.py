"""The deployment files agree with the design: compose services, the Procfile, pinned dependencies."""

import json
import re
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from django.core.files.uploadedfile import SimpleUploadedFile

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


STORE_SERVICES = ["web", "inference", "worker", "worker-gpu", "beat"]
# What each store service reads or writes on disk, by setting: each must be a shared named volume mounted there.
NEEDS = {
    "init": ["MODELS_REGISTRY_ROOT", "MEDIA_ROOT"],  # imports the base model; seeds the store
    "web": ["MODELS_REGISTRY_ROOT", "MEDIA_ROOT", "FINETUNE_WORK_ROOT"],  # stores uploads; downloads, model cards
    "inference": ["MODELS_REGISTRY_ROOT"],  # serves every version
    "worker": ["MODELS_REGISTRY_ROOT", "MEDIA_ROOT", "FINETUNE_WORK_ROOT"],  # validates uploads; merges
    "worker-gpu": ["MODELS_REGISTRY_ROOT", "MEDIA_ROOT", "FINETUNE_WORK_ROOT"],  # trains on uploads; registers
}
# The variables a compose user sets in .env, for interpolating the file the way compose does.
DOTENV = {"SECRET_KEY": "s" * 50, "INFERENCE_REMOTE_API_KEY": "shared-token"}


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ${NAME}, ${NAME:-default} and ${NAME:?error} (an unset required variable is an error)."""

    def one(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if variables.get(name):
            return variables[name]
        if op == ":?":
            raise KeyError(f"{name}: {arg}")
        return arg if op == ":-" else ""

    return re.sub(r"\$\{([A-Z_]+)(?:(:[-?])([^}]*))?\}", one, str(value))


def service_env(name: str, variables: dict[str, str] = DOTENV) -> dict[str, str]:
    return {k: interpolate(v, variables) for k, v in (compose()["services"][name].get("environment") or {}).items()}


def mounts(name: str) -> dict[str, str]:
    """A service's named volumes: mount path -> volume name (only named volumes: a bind or an anonymous volume is
    not shared storage)."""
    declared = compose()["volumes"]
    found = {}
    for entry in compose()["services"][name].get("volumes") or []:
        source, target = entry.split(":")[:2]
        if source in declared:
            found[target] = source
    return found


def host_env(name: str, volumes_dir: Path) -> dict[str, str]:
    """A service's path settings as this machine sees them: each volume is a folder under `volumes_dir`, and a
    setting that is not on a volume of that service fails here (it would be the container's own, unshared)."""
    env, on = service_env(name), mounts(name)
    paths = {}
    for setting in NEEDS[name]:
        value = env[setting]
        target = next((t for t in on if value == t or value.startswith(t.rstrip("/") + "/")), None)
        assert target, f"{name}: {setting}={value} is on no shared volume of {name} (mounts: {on})"
        paths[setting] = str(volumes_dir / on[target] / value[len(target):].lstrip("/"))
    return paths


def test_compose_has_the_production_services():
    services = compose()["services"]
    assert set(services) == {"db", "redis", "init", *STORE_SERVICES, "vllm"}  # vllm: the gpu profile's
    for name in ["init", *STORE_SERVICES]:
        env = service_env(name)
        assert env["DATABASE_URL"].startswith("postgres://") and env["CELERY_BROKER_URL"].startswith("redis://")
        assert services[name]["depends_on"]["db"]["condition"] == "service_healthy"
    # A store without its secrets does not start (compose refuses an unset ${NAME:?...}).
    for required in DOTENV:
        with pytest.raises(KeyError, match=required):
            service_env("web", {k: v for k, v in DOTENV.items() if k != required})


def test_compose_init_sets_up_once_and_every_store_service_waits_for_it():
    services = compose()["services"]
    init = services["init"]
    steps = re.findall(r"manage\.py (\w+)", init["command"])
    assert steps == ["migrate", "import_base_model", "seed_store"] and " && " in init["command"]
    assert init["restart"] == "no"
    for name in STORE_SERVICES:
        assert services[name]["depends_on"]["init"]["condition"] == "service_completed_successfully", name
    # web sets nothing up and loads no model: it starts processes (WEB_PROCESSES of them) and serves.
    web = services["web"]["command"]
    assert "import_base_model" not in web and "migrate" not in web
    assert web.startswith("uvicorn store.asgi:application") and "--workers ${WEB_PROCESSES:-2}" in web
    assert "TORCH_NUM_THREADS" not in services["web"]["environment"]


def test_compose_uploads_and_checkpoints_are_one_volume_at_the_same_path_everywhere():
    """web stores an upload under MEDIA_ROOT; worker validates it and worker-gpu trains on it from theirs: one named
    volume, mounted at each one's MEDIA_ROOT. Checkpoints (FINETUNE_WORK_ROOT) likewise."""
    for setting in ["MEDIA_ROOT", "FINETUNE_WORK_ROOT"]:
        readers = [name for name in NEEDS if setting in NEEDS[name]]
        assert {"web", "worker", "worker-gpu"} <= set(readers)
        placed = {(service_env(name)[setting], mounts(name).get(service_env(name)[setting])) for name in readers}
        assert len(placed) == 1 and None not in next(iter(placed)), (setting, placed)


def test_compose_every_service_that_loads_weights_mounts_the_registry_at_its_root():
    placed = set()
    for name in ["init", "web", "inference", "worker", "worker-gpu"]:
        root = service_env(name)["MODELS_REGISTRY_ROOT"]
        placed.add((root, mounts(name).get(root)))
    assert placed == {("/data/registry", "registry")}, placed


def test_compose_web_generates_through_the_internal_model_server():
    services = compose()["services"]
    web, inference = service_env("web"), service_env("inference")
    assert "python -m apps.inference.server" in services["inference"]["command"]
    assert web["INFERENCE_BACKEND"] == "remote"
    url = urlsplit(web["INFERENCE_REMOTE_BASE_URL"])
    assert (url.hostname, url.port, url.path) == ("inference", int(inference["INFERENCE_PORT"]), "/v1")
    assert inference["INFERENCE_HOST"] == "0.0.0.0"  # listens on the container's network...
    assert "ports" not in services["inference"]  # ...which is internal: no port published to the host
    networks = compose()["networks"]
    assert services["inference"]["networks"] == ["inference"] and networks["inference"]["internal"] is True
    assert "inference" in services["web"]["networks"] and "default" in services["web"]["networks"]
    # One token for both sides, from .env (a generated token file would differ per container).
    assert web["INFERENCE_REMOTE_API_KEY"] == inference["INFERENCE_REMOTE_API_KEY"] == DOTENV["INFERENCE_REMOTE_API_KEY"]
    # Its health check is the bare /health (no token) on its own port; web waits for it.
    probe = " ".join(services["inference"]["healthcheck"]["test"])
    assert f"http://127.0.0.1:{inference['INFERENCE_PORT']}/health'" in probe
    assert services["web"]["depends_on"]["inference"]["condition"] == "service_healthy"


# What a GPU host puts in .env to serve with vLLM (README "vLLM").
GPU_DOTENV = {**DOTENV, "COMPOSE_PROFILES": "gpu", "INFERENCE_REMOTE_KIND": "vllm",
              "INFERENCE_REMOTE_BASE_URL": "http://vllm:8001/v1", "INFERENCE_SERVER_REPLICAS": "0"}


def test_compose_gpu_profile_serves_with_vllm_in_place_of_the_model_server(settings):
    from apps.inference.layout import folder_for_model_id
    from apps.tuning.hyperparameters import HYPERPARAMETERS

    services = compose()["services"]
    vllm = services["vllm"]
    assert vllm["profiles"] == ["gpu"] and not any("profiles" in services[n] for n in ["init", *STORE_SERVICES])
    assert vllm["image"].startswith("vllm/vllm-openai:") and vllm["entrypoint"] == ["vllm", "serve"]
    model, *flags = [interpolate(arg, GPU_DOTENV) for arg in vllm["command"]]
    options = dict(f.removeprefix("--").split("=", 1) for f in flags if "=" in f)
    env = {k: interpolate(v, GPU_DOTENV) for k, v in vllm["environment"].items()}
    # Adapters load at runtime, up to the highest rank the store trains; web's token is vLLM's key.
    assert "--enable-lora" in flags and env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert int(options["max-lora-rank"]) >= next(h.high for h in HYPERPARAMETERS if h.name == "lora_rank")
    assert int(options["max-cpu-loras"]) >= int(options["max-loras"]) >= 1
    web = service_env("web", GPU_DOTENV)
    assert env["VLLM_API_KEY"] == web["INFERENCE_REMOTE_API_KEY"] == DOTENV["INFERENCE_REMOTE_API_KEY"]
    assert env["HF_HUB_OFFLINE"] == "1"
    # The registry volume read-only, where web says vLLM sees it; the model is the base model's version folder on it.
    (mount,) = vllm["volumes"]
    source, target, mode = mount.split(":")
    assert (source, mode) == ("registry", "ro") and target == web["INFERENCE_REMOTE_REGISTRY_ROOT"]
    assert model == f"{target}/{folder_for_model_id(settings.BASE_MODEL_ID)}/1"  # import_base_model's first version
    # Web talks to it as vLLM, on the internal network; the CPU model server is off, and web waits for vLLM alone.
    url = urlsplit(web["INFERENCE_REMOTE_BASE_URL"])
    assert web["INFERENCE_REMOTE_KIND"] == "vllm" and options["host"] == "0.0.0.0"
    assert (url.hostname, url.port, url.path) == ("vllm", int(options["port"]), "/v1")
    assert vllm["networks"] == ["inference"] and "ports" not in vllm
    assert interpolate(services["inference"]["deploy"]["replicas"], GPU_DOTENV) == "0"
    assert interpolate(services["inference"]["deploy"]["replicas"], DOTENV) == "1"
    for server in ["inference", "vllm"]:
        assert services["web"]["depends_on"][server] == {"condition": "service_healthy", "required": False}
    assert vllm["depends_on"]["init"]["condition"] == "service_completed_successfully"  # the base model is there
    probe = " ".join(vllm["healthcheck"]["test"])
    assert f"http://127.0.0.1:{options['port']}/health'" in probe
    device = vllm["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["capabilities"] == ["gpu"] and device["count"] == 1
    # Without the profile nothing changes: web on the store's model server.
    plain = service_env("web")
    assert (plain["INFERENCE_REMOTE_KIND"], plain["INFERENCE_REMOTE_BASE_URL"]) == ("store", "http://inference:8001/v1")


def test_image_makes_the_volumes_and_beat_schedule_writable_and_leaves_local_data_out():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "USER store" in dockerfile
    made = re.search(r"mkdir -p ([^&\n]+)", dockerfile).group(1).split()
    owned = re.search(r"chown -R store ([^\n]+)", dockerfile).group(1).split()
    for name in NEEDS:
        for target in mounts(name):
            # A new named volume takes the owner of its mount point in the image: the store user may write there.
            assert target in made and any(target.startswith(o.rstrip("/") + "/") or target == o for o in owned), target
    beat = compose()["services"]["beat"]["command"]
    schedule = re.search(r"--schedule (\S+)", beat).group(1)
    assert schedule.startswith("/app/var/") and "/app/var" in made and "/app/var" in owned
    # The build context's runtime data (database, secret, token), virtualenv, models and .env stay out of the image.
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"var", ".venv", ".env", "models_registry/*", ".git"} <= set(ignored)


def test_gpu_worker_reserves_a_gpu_and_consumes_only_the_gpu_queue():
    gpu = compose()["services"]["worker-gpu"]
    assert re.search(r"-Q gpu\b", gpu["command"]) and "-c 1" in gpu["command"]
    assert "--prefetch-multiplier 1" in gpu["command"]
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["capabilities"] == ["gpu"] and device["count"] == 1
    assert "-Q celery" in compose()["services"]["worker"]["command"]


def procfile() -> dict[str, str]:
    from store.supervisor import procfile_read

    return dict(procfile_read(ROOT / "Procfile"))


def test_procfile_runs_web_the_model_server_two_workers_and_beat_with_capped_threads():
    lines = procfile()
    assert set(lines) == {"web", "inference", "worker", "worker-gpu", "beat"}
    # web: uvicorn (store/web.py: httptools, uvloop) on the socket the supervisor binds and shares between its copies.
    assert "python -m store.web --fd $WEB_FD" in lines["web"]
    assert "python -m apps.inference.server" in lines["inference"]
    assert "nice -n 5 " in lines["inference"]  # web's requests come before decoding on a shared machine (Procfile)
    assert "-Q celery " in lines["worker"] and "-Q gpu " in lines["worker-gpu"] and "-c 1" in lines["worker-gpu"]
    for name in ["inference", "worker", "worker-gpu"]:
        assert "TORCH_NUM_THREADS=" in lines[name] and "OMP_NUM_THREADS=" in lines[name]


def test_make_run_starts_the_procfile_under_our_supervisor():
    makefile = (ROOT / "Makefile").read_text()
    run = makefile[makefile.index("\nrun:"):].split("\n\n")[0]
    assert "-m store.supervisor Procfile" in run and "honcho" not in makefile


def test_lock_file_agrees_with_pyproject_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = project["dependencies"] + project["optional-dependencies"]["test"]
    locked = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        name, _, version = line.partition("==")
        locked[re.sub(r"[-_.]+", "-", name).lower()] = version
    for pin in pins:
        name, version = re.match(r"([A-Za-z0-9_.\-]+)(?:\[[^\]]+\])?==(.+)", pin).groups()
        assert locked.get(re.sub(r"[-_.]+", "-", name).lower()) == version, pin
    # The CPU build on disk; any other torch spec pulls a multi-GB CUDA build.
    assert locked["torch"] == "2.13.0"


def compose_worker(name: str, volumes_dir: Path, **extra: str) -> tuple[str, dict[str, str]]:
    """A compose worker service as a real process here: its queues and environment, its volumes as folders under
    `volumes_dir`; the test's database and broker stand in for `db` and `redis`."""
    queues = re.search(r"-Q (\S+)", compose()["services"][name]["command"]).group(1)
    env = {k: v for k, v in service_env(name).items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    return queues, {**env, **host_env(name, volumes_dir), **extra}


@pytest.mark.django_db(transaction=True)
def test_in_the_compose_layout_the_workers_read_what_web_stored(tiny_hf_dir, tmp_path, settings, client, django_user_model):
    """A training file uploaded through web's API lands on the media volume; a real `worker` process with the
    compose worker's environment validates it against the base model's tokenizer on the registry volume (which
    `init` filled), and a real `worker-gpu` trains on it and registers the result where web finds it."""
    from apps.accounts.services import api_key_create
    from apps.registry.services import model_version_register
    from apps.tuning.models import FineTuningJob, TrainingFile
    from tests.live import celery_worker, wait_for

    volumes = tmp_path / "volumes"
    settings.MODELS_REGISTRY_ROOT = Path(host_env("init", volumes)["MODELS_REGISTRY_ROOT"])
    model_version_register(name=settings.BASE_MODEL_ID, source_dir=tiny_hf_dir)  # what init's import_base_model does
    web = host_env("web", volumes)
    settings.MODELS_REGISTRY_ROOT = Path(web["MODELS_REGISTRY_ROOT"])
    settings.MEDIA_ROOT = Path(web["MEDIA_ROOT"])
    settings.FINETUNE_WORK_ROOT = Path(web["FINETUNE_WORK_ROOT"])
    owner = django_user_model.objects.create_user("creator", password="x")
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {api_key_create(user=owner, name='deploy')[1]}"}

    lines = [{"messages": [{"role": "user", "content": f"Say {w}."}, {"role": "assistant", "content": f"{w}!"}]}
             for w in ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]]
    body = "".join(json.dumps(line) + "\n" for line in lines).encode()
    answer = client.post("/v1/files", {"file": SimpleUploadedFile("words.jsonl", body), "purpose": "fine-tune"}, **bearer)
    assert answer.status_code == 200, answer.content
    stored = TrainingFile.objects.get(public_id=answer.json()["id"])
    assert Path(stored.file.path).is_relative_to(volumes / "media") and Path(stored.file.path).read_bytes() == body

    queues, worker_env = compose_worker("worker", volumes)
    gpu_queues, gpu_env = compose_worker("worker-gpu", volumes, TORCH_NUM_THREADS="1", FINETUNE_CHECKPOINT_STEPS="2")
    with celery_worker(queues=queues, log_path=tmp_path / "worker.log", **worker_env):
        checked = wait_for(lambda: TrainingFile.objects.exclude(status="uploaded").filter(pk=stored.pk).first(),
                           timeout=60, what="the worker to validate the upload")
        assert checked.status == "processed", (checked.problems, (tmp_path / "worker.log").read_text()[-3000:])
        assert checked.example_count == len(lines) and checked.token_count > 0  # counted with the registry's tokenizer

        with celery_worker(queues=gpu_queues, log_path=tmp_path / "worker-gpu.log", **gpu_env):
            answer = client.post("/v1/fine_tuning/jobs", {"training_file": stored.public_id, "model": settings.BASE_MODEL_ID,
                                 "hyperparameters": {"n_epochs": 1}}, content_type="application/json", **bearer)
            assert answer.status_code == 200, answer.content
            job = wait_for(lambda: FineTuningJob.objects.filter(public_id=answer.json()["id"], status__in=FineTuningJob.FINISHED).first(),
                           timeout=180, what="worker-gpu to train")
    assert job.status == "succeeded", (job.error_message, (tmp_path / "worker-gpu.log").read_text()[-3000:])
    # The result is on the registry volume, where web (and inference) look for it.
    assert job.result_version.path.is_relative_to(volumes / "registry")
    assert (job.result_version.path / "adapter_model.safetensors").is_file()

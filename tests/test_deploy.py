"""The deployment files agree with the design: compose services, the Procfile, pinned dependencies."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_the_production_services():
    services = compose()["services"]
    assert set(services) == {"db", "redis", "web", "worker", "worker-gpu", "beat"}
    for name in ["web", "worker", "worker-gpu", "beat"]:
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://") and env["CELERY_BROKER_URL"].startswith("redis://")
        assert services[name]["depends_on"]["db"]["condition"] == "service_healthy"


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
    # web: uvicorn on the socket the supervisor binds and shares between its copies, httptools and uvloop.
    assert "uvicorn store.asgi:application --fd $WEB_FD" in lines["web"]
    assert "--http httptools --loop uvloop" in lines["web"] and "--lifespan off" in lines["web"]
    assert "python -m apps.inference.server" in lines["inference"]
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

